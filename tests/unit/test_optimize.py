"""models.optimize: int8 recipe, pruning and distillation on the shipped tiny catalog-copy model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from bench import isolated_torchao
from genbatch.errors import ModelIntegrityError, SpecError
from models.optimize import (
    OPTIMIZATION_CARD,
    RECIPE,
    apply_recipe,
    count_linear,
    count_quantized_linear,
    distill,
    load_causal_lm,
    measured_sparsity,
    prune,
    quantize_int8,
    read_recipe,
)
from models.optimize.quantize import TORCH_AO, _cpu_dynamic_int8
from models.registry import REFUSED_SUFFIXES
from models.zoo import CATALOG_COPY_DIR
from models.zoo.catalog_corpus import as_attributes, heldout_combinations, make_prompt

PARENT = CATALOG_COPY_DIR / "v2"
ROWS = 4  # quality rows in unit tests: enough to exercise the path, quick


def greedy_ids(model: Any, tokenizer: Any, n: int = 12, new: int = 12) -> Any:
    """The ``new`` greedy tokens after each of ``n`` example prompts (fixed length: no early EOS)."""
    prompts = [make_prompt(as_attributes(c)) for c in heldout_combinations()[:n]]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=new, min_new_tokens=new,
                             pad_token_id=tokenizer.pad_token_id)
    return out[:, enc["input_ids"].shape[1] :]


def assert_no_pickle_files(folder: Path) -> None:
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    bad = [p.name for p in files if p.name.endswith(REFUSED_SUFFIXES) or p.suffix not in {".json", ".safetensors"}]
    assert not bad, f"unexpected (pickle?) files written: {bad}"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """One intra-op thread: these models are tiny, and on shared cores extra threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def int8_variant(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("opt") / "int8"
    return out, quantize_int8(PARENT, out, eval_rows=ROWS)


# --------------------------------------------------------------------------- int8


def test_int8_quantises_every_linear_and_keeps_safetensors_only(int8_variant: tuple[Path, dict[str, Any]]) -> None:
    out, card = int8_variant
    assert card["quantize"]["linear_quantized"] > 0
    assert card["quantize"]["linear_quantized"] == card["quantize"]["linear_total"] == 15  # 2 layers x 7 + lm_head
    recipe = json.loads((out / RECIPE).read_text())
    assert recipe["quantize"]["dtype"] == "int8" and recipe["quantize"]["modules"] == "Linear"
    assert recipe["quantize"]["device_path"] == {"cpu": "dynamic_int8", "cuda": "weight_only_int8"}
    assert card["recipe"] == recipe
    # the variant stores the parent's weights byte for byte; the quantised form lives in memory only
    assert (out / "model.safetensors").read_bytes() == (PARENT / "model.safetensors").read_bytes()
    assert not (out / "zoo.json").exists()
    assert card["size"]["variant_bytes"] < 0.5 * card["size"]["parent_bytes"]
    assert card["lineage"]["method"] == "quantize_int8" and card["lineage"]["parent"]["version"] == 2
    assert card["quality"]["rows"] == ROWS and card["quality"]["parent"] == 1.0
    assert json.loads((out / OPTIMIZATION_CARD).read_text()) == card
    assert_no_pickle_files(out)


def test_int8_recipe_round_trips_to_the_in_memory_quantised_model(int8_variant: tuple[Path, dict[str, Any]]) -> None:
    out, _ = int8_variant
    in_memory, tokenizer = load_causal_lm(PARENT)
    in_memory = _cpu_dynamic_int8(in_memory, TORCH_AO)
    loaded, _ = load_causal_lm(out)  # what the worker does: load the variant folder ...
    loaded = apply_recipe(loaded, read_recipe(out), "cpu")  # ... then apply its recipe
    assert count_quantized_linear(loaded) == count_quantized_linear(in_memory) == 15
    assert torch.equal(greedy_ids(loaded, tokenizer), greedy_ids(in_memory, tokenizer))


def test_torchao_backend_quantises_linears(tmp_path: Path) -> None:
    # torchao is kept off the venv's path (bench/isolated_torchao.py): it runs in a child process.
    why = isolated_torchao.missing()
    assert why is None, why
    code = ("import json, sys; from pathlib import Path; from models.optimize import quantize_int8; "
            "card = quantize_int8(Path(sys.argv[1]), Path(sys.argv[2]), backend='torchao', eval_rows=int(sys.argv[3])); "
            "print(json.dumps(card['recipe']['quantize']['method'])); print(json.dumps(card['quantize']))")
    proc = subprocess.run([sys.executable, "-c", code, str(PARENT), str(tmp_path / "q"), str(ROWS)],
                          env=isolated_torchao.child_env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    method, quantize = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert method.startswith("torchao.")
    assert quantize["linear_quantized"] == 15
    assert_no_pickle_files(tmp_path / "q")
    assert "torchao" not in sys.modules, "torchao reached the test process"


def test_apply_recipe_without_quantize_is_a_no_op_and_bad_inputs_are_named() -> None:
    model, _ = load_causal_lm(PARENT)
    assert apply_recipe(model, None, "cpu") is model
    assert apply_recipe(model, {}, "cpu") is model
    assert count_quantized_linear(model) == 0 and count_linear(model) == 15
    recipe = json.loads(json.dumps({"quantize": {"method": TORCH_AO, "dtype": "int8", "modules": "Linear",
                                                 "device_path": {"cpu": "dynamic_int8"}}}))
    with pytest.raises(SpecError, match="no path for device 'mps'"):
        apply_recipe(model, recipe, "mps")
    with pytest.raises(SpecError, match="only int8"):
        apply_recipe(model, {"quantize": {"dtype": "int4", "modules": "Linear"}}, "cpu")


def test_refuses_non_empty_output_and_pickle_parents(tmp_path: Path, int8_variant: tuple[Path, dict[str, Any]]) -> None:
    out, _ = int8_variant
    with pytest.raises(FileExistsError, match="not empty"):
        quantize_int8(PARENT, out, eval_rows=ROWS)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((PARENT / "config.json").read_text())
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelIntegrityError, match="pickle"):
        prune(bad, tmp_path / "out", 0.5)


# --------------------------------------------------------------------------- pruning


def test_structured_pruning_shrinks_intermediate_size_and_loads_as_safetensors(tmp_path: Path) -> None:
    out = tmp_path / "p50"
    card = prune(PARENT, out, 0.5, structured=True, eval_rows=ROWS)
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 192
    assert card["prune"]["intermediate_size"] == [384, 192]
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True, local_files_only=True).eval()
    for layer in model.model.layers:
        assert layer.mlp.gate_proj.weight.shape == (192, 128) and layer.mlp.down_proj.weight.shape == (128, 192)
    assert card["prune"]["params"][1] < card["prune"]["params"][0]
    assert card["size"]["variant_bytes"] < card["size"]["parent_bytes"]
    _, tokenizer = load_causal_lm(out)
    assert greedy_ids(model, tokenizer, n=2, new=4).shape == (2, 4)
    assert_no_pickle_files(out)


def test_structured_pruning_keeps_the_highest_scoring_channels() -> None:
    from models.optimize.prune import channel_scores, prune_mlp_channels

    parent, _ = load_causal_lm(PARENT)
    pruned, _ = load_causal_lm(PARENT)
    assert prune_mlp_channels(pruned, 0.75)["intermediate_size"] == [384, 96]
    mlp, kept = parent.model.layers[0].mlp, pruned.model.layers[0].mlp
    keep = channel_scores(mlp).topk(96).indices.sort().values
    assert torch.equal(kept.gate_proj.weight, mlp.gate_proj.weight[keep])
    assert torch.equal(kept.down_proj.weight, mlp.down_proj.weight[:, keep])
    assert torch.equal(pruned.model.layers[0].self_attn.q_proj.weight, parent.model.layers[0].self_attn.q_proj.weight)


def test_unstructured_sparsity_is_measured_close_to_target() -> None:
    from models.optimize.prune import prune_unstructured

    model, _ = load_causal_lm(PARENT)
    for sparsity in (0.3, 0.5, 0.7):
        assert prune_unstructured(model, sparsity)["sparsity_measured"] == pytest.approx(sparsity, abs=0.005)


def test_unstructured_pruning_is_permanent_and_saved_dense(tmp_path: Path) -> None:
    sparsity = 0.9
    out = tmp_path / "u"
    card = prune(PARENT, out, sparsity, structured=False, eval_rows=ROWS)
    assert card["prune"]["sparsity_measured"] == pytest.approx(sparsity, abs=0.005)
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True, local_files_only=True)
    assert measured_sparsity(model) == pytest.approx(sparsity, abs=0.005)
    # permanent: plain weights, no weight_orig / weight_mask left behind by torch.nn.utils.prune
    names = set(model.state_dict())
    assert not any(n.endswith(("weight_orig", "weight_mask")) for n in names)
    assert card["size"]["ratio"] == 1.0  # dense storage: unstructured zeros save no bytes
    assert_no_pickle_files(out)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_pruning_rejects_out_of_range_sparsity(tmp_path: Path, bad: float) -> None:
    with pytest.raises(SpecError, match="strictly between 0 and 1"):
        prune(PARENT, tmp_path / "x", bad)


# --------------------------------------------------------------------------- distillation


def test_distillation_builds_a_smaller_student_that_loads_and_generates(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"steps": 8, "hidden_size": 32, "layers": 1, "corpus_size": 256, "batch_size": 16,
                              "eval_rows": 4}
    card = distill(PARENT, tmp_path / "s1", **kwargs)
    out = tmp_path / "s1"
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (32, 1, 96)
    assert config["vocab_size"] == json.loads((PARENT / "config.json").read_text())["vocab_size"]
    assert card["size"]["variant_bytes"] < card["size"]["parent_bytes"]
    assert card["distill"]["params"][1] < card["distill"]["params"][0]
    assert (out / "tokenizer.json").read_bytes() == (PARENT / "tokenizer.json").read_bytes()
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True, local_files_only=True).eval()
    _, tokenizer = load_causal_lm(out)
    assert greedy_ids(model, tokenizer, n=2, new=4).shape == (2, 4)
    assert_no_pickle_files(out)
    # deterministic: the same inputs give the same weights, byte for byte, and the caller's RNG is untouched
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    distill(PARENT, tmp_path / "s2", **kwargs)
    assert torch.equal(torch.rand(1), expected)
    assert (tmp_path / "s2" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
