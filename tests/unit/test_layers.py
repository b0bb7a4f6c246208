"""LoRA / DoRA / adapter / NF4 building blocks and how targets are found."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from headstart.errors import BadInput
from headstart.methods._layers import (
    NF4_CODE,
    Adapter,
    LoRALinear,
    NF4Embedding,
    adapter_targets,
    find_blocks,
    linear_targets,
    param_counts,
    storage_bytes,
)


def tiny_bert(hidden=32, layers=2):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                intermediate_size=hidden * 2, max_position_embeddings=32))


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=64))


def test_lora_starts_as_the_base_and_merges_exactly():
    base = nn.Linear(16, 24)
    lora = LoRALinear(base, rank=4, alpha=8, dropout=0.0)
    x = torch.randn(5, 16)
    torch.testing.assert_close(lora(x), base(x))
    with torch.no_grad():
        lora.lora_B.normal_()
    merged = lora.merged()
    torch.testing.assert_close(merged(x), lora(x), rtol=1e-5, atol=1e-5)
    assert (lora(x) - base(x)).abs().max() > 1e-3


def test_dora_starts_as_the_base_and_merges_exactly():
    base = nn.Linear(16, 24)
    dora = LoRALinear(base, rank=4, alpha=8, dropout=0.0, dora=True)
    x = torch.randn(5, 16)
    torch.testing.assert_close(dora(x), base(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        dora.lora_B.normal_()
        dora.magnitude.mul_(1.5)
    torch.testing.assert_close(dora.merged()(x), dora(x), rtol=1e-5, atol=1e-5)
    assert dora.magnitude.shape == (24,)


def test_adapter_starts_as_the_base():
    base = nn.Linear(16, 16)
    ad = Adapter(base, bottleneck=4)
    x = torch.randn(3, 16)
    torch.testing.assert_close(ad(x), base(x))
    assert sum(p.numel() for n, p in ad.named_parameters() if not n.startswith("base.")) == 2 * 16 * 4 + 4 + 16


def test_blocks_and_targets_are_found_structurally():
    bert = tiny_bert()
    assert [n for n, _ in find_blocks(bert)] == ["encoder.layer.0", "encoder.layer.1"]
    rel = sorted({r for _, r in linear_targets(bert, None, what="lora")})
    assert rel == ["attention.output.dense", "attention.self.key", "attention.self.query", "attention.self.value",
                   "intermediate.dense", "output.dense"]
    assert all(not full.startswith("pooler") for full, _ in linear_targets(bert, None, what="lora"))
    assert [r for _, r in linear_targets(bert, ["attention.self.query"], what="lora")] == ["attention.self.query"] * 2
    assert sorted({r for _, r in adapter_targets(bert, None)}) == ["attention.output.dense", "output.dense"]
    llama = tiny_llama()
    assert sorted({r for _, r in adapter_targets(llama, None)}) == ["mlp.down_proj", "self_attn.o_proj"]
    assert len(linear_targets(llama, None, what="lora")) == 2 * 7


def test_target_errors_name_the_layers():
    with pytest.raises(BadInput, match="no repeated blocks"):
        linear_targets(nn.Sequential(nn.Linear(2, 2)), None, what="lora")
    with pytest.raises(BadInput, match="query_proj.*its block layers are: .*attention.self.query"):
        linear_targets(tiny_bert(), ["query_proj"], what="lora")
    conv_blocks = nn.Module()
    conv_blocks.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(3, 3, 1)) for _ in range(2)])
    with pytest.raises(BadInput, match="no nn.Linear layers"):
        linear_targets(conv_blocks, None, what="lora")
    with pytest.raises(BadInput, match="--set targets="):
        mlp = nn.Module()
        mlp.layers = nn.ModuleList([nn.Sequential(nn.Linear(4, 4)) for _ in range(2)])
        adapter_targets(mlp, None)


def test_nf4_embedding_is_close_and_four_bits():
    torch.manual_seed(0)
    table = torch.randn(1000, 128) * 0.05
    q = NF4Embedding(table, padding_idx=0)
    ids = torch.tensor([[1, 5, 999], [0, 2, 3]])
    dense = table[ids]
    err = (q(ids) - dense).abs().max() / table.abs().max()
    assert err < 0.1  # NF4: 16 levels per block of 64
    rel = ((q(ids) - dense).norm() / dense.norm()).item()
    assert rel < 0.12
    ratio = storage_bytes(q) / (table.numel() * 4)
    assert 0.125 <= ratio < 0.16  # 4 bits + one fp16 scale per 64 values
    assert q.weight.shape == (1000, 128)
    assert NF4_CODE.numel() == 16


def test_param_counts_count_quantised_weights_by_their_logical_size():
    bnb = pytest.importorskip("bitsandbytes")
    lin = nn.Linear(128, 64)
    q = bnb.nn.Linear4bit(128, 64, quant_type="nf4")
    q.load_state_dict(lin.state_dict())
    q = q.to("cpu")
    holder = nn.Sequential(q)
    assert param_counts(holder) == (64, 128 * 64 + 64)  # the 4-bit weight is frozen, the bias is not
    assert storage_bytes(holder) < 0.2 * (128 * 64 * 4)
