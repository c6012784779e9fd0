"""A model whose load always fails."""


class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("cannot initialise")

    def execute(self, requests):
        raise AssertionError("never loaded, never called")
