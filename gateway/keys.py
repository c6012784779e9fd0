"""Typed application keys for every shared component."""

from __future__ import annotations

from aiohttp import web

from gateway.auth import Authorizer
from gateway.inference import InferenceService
from gateway.loading.accountant import MemoryAccountant
from gateway.loading.eviction import EvictionPolicy
from gateway.loading.loader import Loader
from gateway.loading.parts import Parts
from gateway.loading.reclaim import Reclaimer
from gateway.loading.registry import Registry
from gateway.loading.unloader import Unloader
from gateway.management import Management
from gateway.metrics import Metrics
from gateway.recovery import Recovery
from gateway.settings import Settings
from gateway.store.cache import DiskCache
from gateway.store.names import StoreNames
from gateway.triton.client import TritonControl
from gateway.triton.health import TritonHealth
from gateway.triton.supervisor import TritonSupervisor
from gateway.triton.upstream import UpstreamPool
from gateway.variants import Variants
from gateway.workers.hub import Hub

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
CONTROL = web.AppKey("control", TritonControl)
UPSTREAM = web.AppKey("upstream", UpstreamPool)
SUPERVISOR = web.AppKey("supervisor", TritonSupervisor)
CACHE = web.AppKey("cache", DiskCache)
LOADER = web.AppKey("loader", Loader)
SERVICE = web.AppKey("service", InferenceService)
ACCOUNTANT = web.AppKey("accountant", MemoryAccountant)
UNLOADER = web.AppKey("unloader", Unloader)
PARTS = web.AppKey("parts", Parts)
POLICY = web.AppKey("policy", EvictionPolicy)
METRICS = web.AppKey("metrics", Metrics)
TRITON_METRICS = web.AppKey("triton_metrics", tuple[UpstreamPool, str])
MANAGEMENT = web.AppKey("management", Management)
VARIANTS = web.AppKey("variants", Variants)
AUTH = web.AppKey("auth", Authorizer)
TRITON_HEALTH = web.AppKey("triton_health", TritonHealth)
RECOVERY = web.AppKey("recovery", Recovery)
RECLAIMER = web.AppKey("reclaimer", Reclaimer)
STORE_NAMES = web.AppKey("store_names", StoreNames)
HUB = web.AppKey("hub", Hub)
