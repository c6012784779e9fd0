"""The SageMaker multi-model container contract: load, list, describe, unload, invoke by name.

SageMaker (or an operator) names a model and where it is: a local folder holding
``config.pbtxt`` and version folders (``/opt/ml/models/<hash>/model``), or a path or
``s3://`` URL inside the model store. Loading goes through the same loader, memory check
and eviction as on-demand requests; answers follow the contract (409 already loaded,
404 not loaded, 507 out of memory).
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from gateway.errors import AlreadyLoaded, NotLoaded, ValidationError
from gateway.loading.loader import Loader
from gateway.loading.parts import Parts
from gateway.loading.registry import ModelState, Named
from gateway.loading.unloader import Unloader
from gateway.resolve import ModelRef, resolve_target, triton_name_for
from gateway.store.cache import DiskCache
from gateway.triton.repository import read_config

MAX_PAGE = 1000


def describe(named: Named) -> dict[str, str]:
    """An entry of the contract's lists."""
    return {"modelName": named.name, "modelUrl": registered_url(named.url)}


def managed_name(name: str, url: str) -> str:
    """The Triton name of a model loaded by name: tagged so no target path can hash alike,
    and covering the url, so a name loaded again from elsewhere is a new model."""
    return triton_name_for(f"models:{name}", f"{name}\x00{url}\x00management")


def registered_url(url: str) -> str:
    """The folder Triton's SageMaker frontend registers: the url less a trailing ``/model``
    (SageMaker hands containers ``/opt/ml/models/<hash>/model``)."""
    trimmed = url.rstrip("/")
    return trimmed.removesuffix("/model") if trimmed.endswith("/model") else url


class Management:
    """The names are the registry's (``Named``); this is what the contract does with them."""

    def __init__(self, parts: Parts, loader: Loader, unloader: Unloader, cache: DiskCache) -> None:
        self._settings = parts.settings
        self._registry = parts.registry
        self._loader = loader
        self._unloader = unloader
        self._cache = cache

    def ref_for(self, name: str, url: str) -> ModelRef:
        """Where the model comes from: a local folder or archive, or a key in the model store.
        The Triton name covers the url too: a name loaded again from elsewhere is a new model,
        never a stale copy of the old one."""
        triton_name = managed_name(name, url)
        store = self._settings.model_store
        if url.startswith("s3://"):
            if not url.startswith(store.rstrip("/") + "/"):
                raise ValidationError(f"url '{url}' is not inside the model store {store}.")
            url = url[len(store.rstrip("/")) + 1 :]
        if url.startswith("/"):
            return ModelRef(
                name=name, candidates=(Path(url).name,), triton_name=triton_name, source=url
            )
        ref = resolve_target(url)
        return ModelRef(name=name, candidates=ref.candidates, triton_name=triton_name)

    def loaded(self, name: str) -> Named:
        """A model loaded by name (if memory ran short since, its next request reloads it)."""
        named = self._registry.named(name)
        if named is None:
            raise NotLoaded(f"Model '{name}' is not loaded.")
        return named

    async def load(self, name: str, url: str) -> Named:
        if not name or not url:
            raise ValidationError("model_name and url are required.")
        # Loaded from the folder as resolved when checked: a link swapped afterwards cannot
        # point the load elsewhere.
        where = await asyncio.to_thread(check_model_url, url, self._settings.model_url_root)
        if self._registry.named(name) is not None:
            raise AlreadyLoaded(f"Model '{name}' is already loaded.")
        named = await asyncio.to_thread(self._group, name, url, where) or Named(
            name, url, self.ref_for(name, where)
        )
        if not self._registry.name(named):  # another POST of the name got here first
            raise AlreadyLoaded(f"Model '{name}' is already loaded.")
        try:
            for member in named.members:  # composing models before their ensemble
                entry = await self._loader.ensure_loaded(member, deadline=float("inf"))
                self._registry.hold(entry)
            await self._loader.ensure_loaded(named.ref, deadline=float("inf"))
        except BaseException:
            self._registry.unname(named)
            await self._release(named.members)
            raise
        return named

    def _group(self, name: str, url: str, where: str) -> Named | None:
        """A local folder holding several models, one of them an ensemble of the others
        (as Triton's SageMaker frontend loads them): each gets a Triton name of its own and
        the ensemble's steps are pointed at those names. Blocking: reads the folder."""
        folder = Path(where)
        if not where.startswith("/") or (folder / "config.pbtxt").exists() or not folder.is_dir():
            return None
        models = sorted(p for p in folder.iterdir() if (p / "config.pbtxt").is_file())
        if not models:
            return None
        ensembles = [p for p in models if read_config(p).platform == "ensemble"]
        if len(ensembles) != 1:
            raise ValidationError(
                f"{url} holds {len(models)} models; exactly one must be an ensemble of the others."
            )
        renames = {p.name: managed_name(f"{name}/{p.name}", url) for p in models}
        members = tuple(
            ModelRef(
                name=f"{name}/{p.name}",
                candidates=(p.name,),
                triton_name=renames[p.name],
                source=str(p),
            )
            for p in models
            if p != ensembles[0]
        )
        top = ensembles[0]
        ref = ModelRef(
            name=name,
            candidates=(top.name,),
            triton_name=managed_name(name, url),
            source=str(top),
            renames=tuple(renames.items()),
        )
        return Named(name, url, ref, members)

    async def _release(self, members: tuple[ModelRef, ...]) -> None:
        for member in members:
            entry = self._registry.get(member.triton_name)
            if entry is not None:
                self._registry.release(entry)
                if entry.state is ModelState.READY:
                    await self._registry.wait_idle(entry)
                    await self._unloader.unload(member.triton_name)
            await self._cache.remove(member)

    def page(self, token: str | None, size: int | None) -> tuple[list[Named], str | None]:
        """Loaded models in name order, ``size`` at a time; the token is the last name, opaque."""
        names = self._registry.names()
        after = _decode(token) if token else None
        if after is not None:
            names = [n for n in names if n > after]
        size = min(size or MAX_PAGE, MAX_PAGE)
        chosen = names[:size]
        more = len(names) > size
        found = [self._registry.named(n) for n in chosen]
        return [n for n in found if n is not None], _encode(chosen[-1]) if more else None

    def catalogue(self) -> list[dict[str, object]]:
        """Every model the gateway knows of, loaded or only on disk, in name order."""
        loading = set(self._loader.loading())
        known: dict[str, dict[str, object]] = {
            e.ref.triton_name: {**e.describe(), "loading": e.ref.triton_name in loading}
            for e in self._registry.entries()
        }
        for triton_name, size in self._cache.on_disk().items():
            if triton_name in known:
                known[triton_name]["diskBytes"] = size
            else:  # unloaded, kept on disk for a fast reload
                known[triton_name] = {
                    "tritonName": triton_name,
                    "state": "on disk",
                    "diskBytes": size,
                }
        return sorted(known.values(), key=lambda row: str(row.get("name", row["tritonName"])))

    async def unload(self, name: str) -> None:
        """Forget the name at once (no request can reach it from now on), let requests in
        flight finish, then unload the model and drop it from disk."""
        named = self.loaded(name)
        self._registry.unname(named)
        entry = self._registry.get(named.ref.triton_name)
        if entry is not None and entry.state is ModelState.READY:
            await self._registry.wait_idle(entry)
            await self._unloader.unload(named.ref.triton_name)
        await self._cache.remove(named.ref)
        await self._release(named.members)


def check_model_url(url: str, root: Path) -> str:
    """Where to load ``url`` from: a local folder given to POST /models must lie under
    ``root`` once symlinks are resolved (a caller of the management API must not load any
    folder of the host), and its resolved path is returned. Blocking."""
    if not url.startswith("/"):
        return url  # a key in the model store (or an s3:// URL), checked by ref_for
    try:
        resolved = Path(url).resolve()
        inside = resolved.is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):
        inside = False
    if not inside:
        raise ValidationError(f"url '{url[:200]}' is outside the folder models are loaded from.")
    return str(resolved)


def _encode(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError("next_page_token is not valid.") from exc
