"""A Hugging Face export (moe-ckpt export --format hf) in `transformers` against our model.

usage: compare_hf.py HF_DIR TOKENS.txt OURS.f32 [GENERATED.jsonl PROMPTS.txt]

Runs in the environment of launch/python-env.sh (transformers 4.44.2 over Debian's
torch). Checks that AutoModelForCausalLM loads HF_DIR as Qwen2MoeForCausalLM and that
its logits on the batch of TOKENS.txt (one sequence of space-separated ids per line)
equal ours (OURS.f32, (B, T, V) float32 from tests/reference/dump_logits) to 1e-4
relative: max |hf - ours| <= 1e-4 max |ours|. Checks that AutoTokenizer loads the
byte-level tokenizer (ids = UTF-8 bytes, both ways). With GENERATED.jsonl (a greedy
moe-generate --jsonl run on PROMPTS.txt), transformers' own greedy generate(), with
its KV cache, must choose the same tokens.
"""

import json
import sys
import warnings

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

RTOL = 1e-4
# Deprecation chatter of transformers 4.44 on torch 1.13, and the note that the tiny
# test model generates past its trained context on purpose.
warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()


def main():
    hf_dir, tokens_path, ours_path = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    model.eval()
    assert type(model).__name__ == "Qwen2MoeForCausalLM", type(model)
    batch = torch.tensor([[int(t) for t in line.split()] for line in open(tokens_path)])
    with torch.no_grad():
        hf = model(batch).logits.numpy()
    ours = np.fromfile(ours_path, dtype="<f4").reshape(hf.shape)
    diff = float(np.abs(hf - ours).max())
    scale = float(np.abs(ours).max())
    print(f"transformers {transformers.__version__}, torch {torch.__version__}: logits "
          f"{tuple(hf.shape)}, max |hf - ours| = {diff:.3e}, {diff / scale:.3e} of max |ours| "
          f"({scale:.3f})")
    assert diff <= RTOL * scale, f"logits differ: {diff} > {RTOL} * {scale}"

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    text = "Hello, wörld!\n\tA fool and his money... 100% ☃"
    ids = tokenizer(text)["input_ids"]
    assert ids == list(text.encode()), (ids, list(text.encode()))
    assert tokenizer.decode(ids) == text, tokenizer.decode(ids)
    assert len(tokenizer) == model.config.vocab_size, (len(tokenizer), model.config.vocab_size)
    print(f"tokenizer: {len(ids)} byte tokens of '{text!r}' round-trip")

    if len(sys.argv) > 5:
        generated, prompts_path = sys.argv[4:6]
        prompts = open(prompts_path, "rb").read().split(b"\n")
        for record in map(json.loads, open(generated)):
            prompt = torch.tensor([list(prompts[record["index"]])])
            with torch.no_grad():
                out = model.generate(prompt, max_new_tokens=len(record["tokens"]),
                                     do_sample=False, pad_token_id=0)
            got = out[0, prompt.shape[1]:].tolist()
            assert got == record["tokens"], (record["index"], got, record["tokens"])
        print(f"generate(): greedy tokens equal moe-generate's for {record['index'] + 1} prompts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
