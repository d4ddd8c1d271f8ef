"""Generates kvprompt's Llama-3- and Qwen2-style test tokenizers and their golden token ids.

No model hub here: a small byte-level BPE (vocab 3,000) is trained with Hugging Face
`tokenizers` on generated text, with the pre-tokenizer, normalizer and post-processor of
Llama 3 (Split on the tiktoken-style pattern with \\p{N}{1,3}, ByteLevel without regex,
<|begin_of_text|> prepended) and of Qwen2 (NFC normalizer, single digits). Golden ids are
the same library's encode() of test texts, so kvprompt's Go fast path is held to HF.

Run with the vLLM venv's python (it has `tokenizers`), from the repository root:
  ~/.cache/infergw/vllm-venv-0.32.0/bin/python kvprompt/testdata/gen/llama3ish.py
"""
import json
import os
import random

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

WORDS = ("the of and to in is for on with that this it as are was be by at from or an not have "
         "kalo mine ruta vozi pesu doba naïve café über straße façade coöperate résumé "
         "東京 你好 世界 こんにちは Привет мир γειά σου ελλάδα").split()
PUNCT = list(".,;:!?()[]{}<>\"'`~@#$%^&*-_=+/\\|") + ["...", "--", "->", "!=", "==", "```"]
SPACES = [" ", " ", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000", "   "]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D"]


def text(rng, n):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            w = rng.choice(WORDS)
            out.append(w.upper() if rng.random() < 0.05 else w)
        elif r < 0.65:
            out.append(str(rng.randint(0, 10 ** rng.randint(1, 7))))
        elif r < 0.75:
            out.append(rng.choice(PUNCT))
        elif r < 0.8:
            out.append(rng.choice(CONTRACTIONS))
        elif r < 0.82:
            out.append(rng.choice(["🙂", "👍🏽", "e\u0301", "ﬁ", "①", "٣", "Ⅻ"]))
        out.append(rng.choice(SPACES) if rng.random() < 0.85 else "")
    return "".join(out)


def build(pattern, nfc):
    tk = Tokenizer(models.BPE())
    if nfc:
        tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    rng = random.Random(7)
    tk.train_from_iterator((text(rng, 200) for _ in range(3000)), trainer=trainer)
    bos = tk.token_to_id("<|begin_of_text|>")
    tk.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)])
    return tk


def cases(rng):
    fixed = [
        "Hello world", "I'm here, you're there; it's THEIR's'", "'sheep 'Twas 'LLama 'd'",
        "1234567 89 0.5 3,141,592", "x  y   z\t\tw \n\n  next\r\n\r\n\tend  ", "trailing spaces   ",
        "   leading", "\n\n\n", "a\u00a0b\u3000c", "naïve cafe\u0301 ﬁne", "東京は 世界 你好！",
        "emoji 🙂👍🏽 ok", "<|begin_of_text|>inside<|eot_id|> text", "(foo) [bar] {baz} .dot ,comma",
        "line\n  indented\n\tcode();\n", "a+b=c != d->e", "''' \"\"\" ``` ---", "١٢٣ ① Ⅻ", "",
        " ", "\t", " \n", "x\n", "'", "''s", "don't\n'T", "  \n  \n x",
    ]
    return fixed + [text(rng, rng.randint(1, 80)) for _ in range(150)]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for name, pattern, nfc in (("llama3ish", LLAMA3, False), ("qwen2ish", QWEN2, True)):
        tk = build(pattern, nfc)
        out = os.path.join(here, "..", name)
        os.makedirs(out, exist_ok=True)
        tk.save(os.path.join(out, "tokenizer.json"))
        rng = random.Random(11)
        golden = []
        for t in cases(rng):
            golden.append({"text": t, "ids": tk.encode(t, add_special_tokens=False).ids,
                           "ids_special": tk.encode(t, add_special_tokens=True).ids})
        with open(os.path.join(out, "golden.json"), "w", encoding="utf-8") as f:
            json.dump(golden, f, ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
