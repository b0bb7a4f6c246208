"""Adaptation methods, lightest to heaviest. One file per method, one registry line each."""

from .adapter import AdapterMethod
from .base import FitContext, Method
from .contrastive import Contrastive
from .finetune import Finetune
from .frozen import Frozen
from .head_only import HeadOnly
from .linear_probe import LinearProbe
from .lora import DoRA, LoRA
from .qlora import QLoRA
from .registry import METHODS, get_method, register_method
from .scratch import Scratch

register_method(LinearProbe)
register_method(Frozen)
register_method(LoRA)
register_method(DoRA)
register_method(QLoRA)
register_method(AdapterMethod)
register_method(Contrastive)
register_method(Finetune)
register_method(Scratch)
register_method(HeadOnly)

__all__ = ["FitContext", "LinearProbe", "METHODS", "Method", "get_method", "register_method"]
