"""What a deployment serves: its base model and the LoRA adapters over it (`GET /v1/models`, /readyz, the SDK).

With the engine in this process (the local dispatcher, once it booted): its model, and, when it serves
adapters, those it loaded, its ADAPTERS_DIR's and the store's made for its model. Without one (queue,
runpod, modal: the engines run elsewhere): the configured model (MODEL_NAME, SERVED_MODEL_NAME) and the
store's adapters made for it. An adapter whose base is not said counts as made for any model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.contracts.adapters import AdapterRecord, fits_base, model_list, model_names
from shared.contracts.settings import Settings
from shared.stores import Store


@dataclass(frozen=True)
class Serving:
    #: the base model's served name
    model: str
    #: the adapters over it, by name
    adapters: list[AdapterRecord]

    def listing(self) -> dict[str, Any]:
        """OpenAI's model list."""
        return model_list(self.model, self.adapters)


async def serving(settings: Settings, store: Store, engine: Any = None) -> Serving:
    """See the module docstring. Raises the store's errors."""
    if engine is None:
        names = model_names(None, settings.model_name, settings.served_model)
        stored = await store.list_adapters()
        return Serving(settings.served_model, [a for a in stored if fits_base(a.base_model, names)])
    if not getattr(engine, "lora_enabled", False):
        return Serving(engine.model_name, [])
    names = getattr(engine, "model_names", None) or model_names(None, settings.model_name, engine.model_name)
    found = {a.name: a for a in await store.list_adapters() if fits_base(a.base_model, names)}
    for name, path in getattr(engine, "found_adapters", {}).items():
        found.setdefault(name, AdapterRecord(name=name, path=str(path)))
    for name in getattr(engine, "adapters", frozenset()):
        found.setdefault(name, AdapterRecord(name=name, path="(loaded)"))
    return Serving(engine.model_name, [found[n] for n in sorted(found)])
