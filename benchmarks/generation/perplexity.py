"""Perplexity on a fixed held-out text, computed the same way for every build.

The text was written for this benchmark (plain expository English, no quotations), so no
model has seen it verbatim. The first :data:`WINDOW` tokens are scored in one forward pass
with an empty KV cache: the mean negative log-likelihood of tokens 2..N given their prefixes.
Graphs without cache inputs (the optimizer's no-cache export) are scored by the same pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

WINDOW = 512

HELD_OUT_TEXT = """\
The old harbour town sits where a slow river meets the sea. For most of its history the town \
lived from fishing, and the boats still leave before dawn, although fewer of them go out each \
year. In the early morning the quay is loud with engines, gulls and the voices of people who \
have known each other since school. By nine o'clock the fish market has sold most of the \
catch, the boats are tied up again, and the cafes along the front begin to fill with \
visitors.

The river brought the town its second living. Barges once carried timber, grain and coal \
down from the farms and mines of the valley, and the warehouses that stored those goods still \
line the eastern bank. Most of them have been turned into flats, workshops or small \
galleries, but the iron rings where the barges were moored remain in the stone, worn smooth \
by rope and weather. A narrow railway followed the river inland until the nineteen sixties, \
when the line was closed and the track was lifted. Its route is now a footpath and cycle \
track that runs for eleven miles through woods and meadows to the market town upstream.

Weather shapes everything here. Winter storms arrive from the south west, and on the worst \
nights the waves break over the harbour wall and throw stones onto the road. The council \
closes the coast road when the tide and the wind are both high, and the bus to the station \
takes the longer route over the hill. In summer the same wind is gentle and steady, which \
makes the bay one of the best places on the coast to learn to sail. A small sailing club runs \
lessons for children on weekday mornings, and on Saturday afternoons its members race around \
three yellow buoys anchored between the lighthouse and the point.

The lighthouse was built in eighteen twenty four after a ship carrying slate ran onto the \
rocks below the point and sank with most of her crew. Its light was first produced by oil \
lamps and polished reflectors, later by a paraffin burner and a large glass lens, and since \
the nineteen eighties by an electric lamp that is switched on and off automatically. No \
keeper has lived in the tower for forty years. The keepers' cottages at its foot are let to \
holiday visitors, and the small museum in the old store room explains how the lens works, \
how the keepers lived, and how ships found their way along this coast before radio and \
satellites.

People who move to the town often say that they came for the sea and stayed for the \
neighbours. The primary school has fewer than a hundred pupils, the library opens three days \
a week, and the doctor's surgery shares a building with the post office. When the bakery \
closed two years ago, a group of residents raised the money to reopen it as a cooperative, \
and it now sells bread, cakes and coffee every morning except Monday. On the first Sunday of \
each month a market fills the square with stalls selling vegetables, cheese, honey, plants \
and second hand books, and a brass band plays outside the church until lunchtime.

Change comes slowly, but it comes. The new sea wall, finished last spring, should protect the \
lower streets from flooding for another fifty years. A solar farm now covers two fields on \
the hill above the town, and the harbour authority is testing electric engines in two of the \
smaller boats. Young people still leave to study and work in the cities, yet some return, \
bringing new trades with them: a boat builder, a software designer, a potter and a bicycle \
mechanic have all opened workshops in the warehouses by the river.
"""


def nll(logits: npt.NDArray[np.floating[Any]], ids: Sequence[int]) -> float:
    """Mean negative log-likelihood of ``ids[1:]`` under ``logits[:-1]`` (positions x vocab).

    Computed in float64 with a max-shifted log-sum-exp, so float16 logits score like float32.
    """
    scores = np.asarray(logits, dtype=np.float64)
    target = np.asarray(ids, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != target.shape[0]:
        raise ValueError(f"logits of shape {scores.shape} do not score {target.shape[0]} ids")
    prev, nxt = scores[:-1], target[1:]
    top = prev.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(prev - top).sum(axis=1))
    return float(np.mean(log_z - prev[np.arange(nxt.shape[0]), nxt]))


def window(tokenizer_json: Path) -> list[int]:
    """The scored tokens: the held-out text's first :data:`WINDOW` ids (no special tokens)."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tokenizer_json)).encode(HELD_OUT_TEXT, add_special_tokens=False)
    if len(ids.ids) < WINDOW:
        raise ValueError(f"the held-out text has {len(ids.ids)} tokens, fewer than {WINDOW}")
    return list(ids.ids[:WINDOW])


def perplexity(onnx_path: Path, ids: Sequence[int]) -> float:
    """Perplexity of ``ids`` under one ONNX causal graph on plain onnxruntime.

    Past inputs (a model-builder graph) get zero-length caches, shaped from the
    ``genai_config.json`` beside the graph; ``position_ids``, when the graph has it, counts
    from 0.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    n = len(ids)
    feed: dict[str, npt.NDArray[Any]] = {}
    config = onnx_path.parent / "genai_config.json"
    head_size = None
    if config.exists():
        head_size = int(json.loads(config.read_text())["model"]["decoder"]["head_size"])
    for arg in session.get_inputs():
        if arg.name == "input_ids":
            feed[arg.name] = np.asarray([ids], dtype=np.int64)
        elif arg.name == "attention_mask":
            feed[arg.name] = np.ones((1, n), dtype=np.int64)
        elif arg.name == "position_ids":
            feed[arg.name] = np.arange(n, dtype=np.int64)[None, :]
        elif arg.name.startswith("past_key_values") and head_size is not None:
            dtype = np.float16 if arg.type == "tensor(float16)" else np.float32
            feed[arg.name] = np.zeros((1, int(arg.shape[1]), 0, head_size), dtype=dtype)
        else:
            raise ValueError(f"no value for graph input {arg.name} ({arg.type} {arg.shape})")
    outputs = [o.name for o in session.get_outputs()]
    name = "logits" if "logits" in outputs else outputs[0]
    (logits,) = session.run([name], feed)
    return float(np.exp(nll(np.asarray(logits)[0], ids)))


def torch_perplexity(hf_dir: Path, ids: Sequence[int]) -> float:
    """The same score for the transformers checkpoint (fp32, torch)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]  # torch's Module.eval is untyped here
    with torch.no_grad():
        logits = model(torch.tensor([list(ids)])).logits[0].numpy()
    return float(np.exp(nll(logits, ids)))
