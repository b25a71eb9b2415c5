"""Fine-tune an exported moe_gpt model with Hugging Face transformers.

    build/moe-ckpt export runs/moe_gpt_small/model.h5 --format hf --out small-hf
    python docs/examples/finetune_hf.py small-hf --text /usr/share/games/fortunes/science \
        --steps 200 --out small-hf-science

`small-hf` is a Qwen2-MoE model directory (docs/checkpoint-format.md, "Hugging Face
export"): AutoModelForCausalLM and AutoTokenizer load it like any model on the Hub. This
example tokenizes a text file with the exported byte-level tokenizer, trains on random
windows of it with torch.optim.AdamW and the model's own loss (labels = inputs; the model
shifts them), reports the loss on fixed held-out windows before and after, and saves the
result with save_pretrained, which from_pretrained (or `moe`-independent tools) reads
back. Needs transformers (4.44.2 runs on Debian's torch 1.13: launch/python-env.sh makes
such an environment).

Add `output_router_logits=True` to from_pretrained to train with Qwen2-MoE's own
load-balancing loss (router_aux_loss_coef in config.json, our moe.aux_loss).
"""

import argparse
import warnings

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def windows(ids, starts, length):
    return torch.stack([ids[s:s + length] for s in starts])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="directory written by moe-ckpt export --format hf")
    parser.add_argument("--text", required=True, help="text file to fine-tune on")
    parser.add_argument("--out", help="save the fine-tuned model here")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=0, help="0: the trained context")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # torch 1.13 deprecations
    transformers.logging.set_verbosity_error()
    torch.manual_seed(args.seed)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    seq = args.seq_len or model.config.max_position_embeddings
    text = open(args.text, encoding="utf-8", errors="replace").read()
    ids = torch.tensor(tokenizer(text)["input_ids"])
    # The last tenth of the text is held out; its evaluation windows are fixed.
    split = len(ids) * 9 // 10
    train_ids, held_ids = ids[:split], ids[split:]
    held = windows(held_ids, torch.linspace(0, len(held_ids) - seq - 1, 16).long(), seq)

    def held_out_loss():
        model.eval()
        with torch.no_grad():
            return float(model(held, labels=held).loss)

    before = held_out_loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    model.train()
    for step in range(args.steps):
        batch = windows(train_ids, torch.randint(0, len(train_ids) - seq, (args.batch,)), seq)
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step + 1}/{args.steps} loss {float(loss):.4f}")
    after = held_out_loss()
    print(f"held-out loss {before:.4f} -> {after:.4f}")
    if args.out:
        model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)
        print(f"saved {args.out}")


if __name__ == "__main__":
    main()
