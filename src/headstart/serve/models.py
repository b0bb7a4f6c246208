"""The models a server holds: runs (and ONNX exports of runs), each with the verbs its task offers.

A *served model* exposes the capabilities verbs use (:mod:`headstart.tasks.verbs`):
``predict_proba``, ``classes``, ``embed``, ``producer``, ``transcribe``, ``generate``, and
``index(name)`` for the indexes the server was given for it. :class:`ServedRun` wraps a
:class:`~headstart.api.Run`, :class:`ServedOnnx` an ONNX export folder
(:class:`~headstart.export_onnx.OnnxRun`); both name themselves by the run id.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput


class Served:
    """Common part: id, task, modality, indexes, and the verbs the model can answer."""

    id: str
    task_name: str
    modality: str

    def __init__(self) -> None:
        self.indexes: dict[str, object] = {}

    def verbs(self) -> list:
        from ..tasks import get_task

        return [v for v in get_task(self.task_name).verbs(self.modality) if all(self._has(n) for n in v.needs)]

    def _has(self, capability: str) -> bool:
        if capability == "index":
            return bool(self.indexes)
        return getattr(self, capability, None) is not None

    def index(self, name: str):
        """The served index called ``name`` ("" when the server holds one for this model)."""
        if not name:
            if len(self.indexes) == 1:
                return next(iter(self.indexes.values()))
            raise BadInput(f"index: the server holds {len(self.indexes)} indexes for run {self.id}; name one of "
                           f"{', '.join(sorted(self.indexes))}")
        try:
            return self.indexes[name]
        except KeyError:
            raise BadInput(f"index: no index {name!r} for run {self.id}; served: {', '.join(sorted(self.indexes))}") from None

    def attach_index(self, index) -> str:
        """Hold ``index`` for search; its name is its folder's name. The index must have been built
        by this model (its producer), else one line naming both."""
        producer = index.producer
        if producer.get("run") != self.id:
            raise BadInput(f"--index {index.path}: built by run {producer.get('run')!r}, not by a served run "
                           f"({self.id}); serve the run that built it")
        name = Path(index.path).name
        if name in self.indexes:
            raise BadInput(f"--index {index.path}: a served index is already called {name!r}; give each a different folder name")
        self.indexes[name] = index
        return name

    def warm_up(self) -> None:
        """Load the weights and run one input through, so the first request pays no loading."""

    def describe(self) -> dict:
        return {"id": self.id, "task": self.task_name, "modality": self.modality, "kind": self.kind,
                "verbs": [v.name for v in self.verbs()], "indexes": sorted(self.indexes)}


class ServedRun(Served):
    kind = "run"

    def __init__(self, run) -> None:
        super().__init__()
        self.run = run
        self.id = run.id
        self.task_name = run.task.name
        self.modality = run.manifest["modality"]
        self.classes = run.classes

    @property
    def producer(self) -> dict:
        return self.run.producer

    def predict_proba(self, inputs: list):
        return self.run.predict(inputs, feature_cache=False).probabilities

    def embed(self, texts: list, *, role: str = "query"):
        return self.run.embed(texts, role=role, feature_cache=False)

    def transcribe(self, paths: list, *, beams: int = 1) -> list[str]:
        return self.run.transcribe(paths, beams=beams)

    def generate(self, prompts: list, **params) -> list[str]:
        return self.run.generate(list(prompts), **params)  # a list in, a list out

    def warm_up(self) -> None:
        self.run.open_model()
        if self.modality == "text" and self.run.task.predicts:
            self.predict_proba(["warm up"])
        elif any("embed" in v.needs for v in self.verbs()):
            self.embed(["warm up"])


class ServedOnnx(Served):
    kind = "onnx"
    transcribe = None
    generate = None

    def __init__(self, folder: Path, threads: int) -> None:
        from ..export_onnx import OnnxRun

        super().__init__()
        # one OnnxRun, called only from the model's worker thread (its tokenizer is not thread-safe)
        self.onnx = OnnxRun(folder, intra_op_num_threads=threads)
        meta = self.onnx.meta
        self.id = meta["source_run"]
        self.task_name = self.onnx.task
        self.modality = "text"
        self.classes = list(self.onnx.classes or [])
        if meta.get("output") != "probabilities":
            self.predict_proba = None
        if meta.get("output") != "embeddings":
            self.embed = None
        self.producer = meta.get("producer") or {"run": self.id}

    def predict_proba(self, inputs: list):
        return self.onnx.predict_proba(list(inputs))

    def embed(self, texts: list, *, role: str = "query"):
        return self.onnx.embed(list(texts), role=role)

    def warm_up(self) -> None:
        if self.predict_proba is not None:
            self.predict_proba(["warm up"])
        elif self.embed is not None:
            self.embed(["warm up"])


def open_served(ref: str, *, store, threads: int, allow_base_change: bool = False) -> Served:
    """A run id/folder, or an ONNX export folder (holding ``model.onnx`` + ``headstart.json``),
    as a served model; the weights load later (:meth:`Served.warm_up`)."""
    folder = Path(ref).expanduser()
    if folder.is_dir() and (folder / "model.onnx").is_file() and (folder / "headstart.json").is_file():
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            raise BadInput(f"{ref}: an ONNX export; serving it needs onnxruntime: pip install 'headstart[onnx]'")
        try:
            return ServedOnnx(folder, threads)
        except BadInput:
            raise
        except Exception as e:  # noqa: BLE001 - corrupt headstart.json / model.onnx (onnxruntime's own error types), missing keys
            why = " ".join(str(e).split())[:160]  # one line, whatever the library printed
            raise BadInput(f"{ref}: not a readable ONNX export ({type(e).__name__}: {why}); export the run again "
                           "with `headstart export RUN --format onnx`") from None
    from ..api import load

    return ServedRun(load(ref, store=store, allow_base_change=allow_base_change))
