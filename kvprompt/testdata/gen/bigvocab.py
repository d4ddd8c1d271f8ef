"""Generates real-size byte-level BPE tokenizers for kvprompt's benchmarks and golden test.

The committed test tokenizers (llama3ish.py) have a 3,000-token vocabulary: their merges
table fits in the CPU caches, a real one does not (Llama 3: 128,256 tokens, ~280k merges;
Qwen2: 151,646). This trains, with Hugging Face `tokenizers` on generated text, tokenizers of
Llama 3's size in three styles -- Llama 3 (Split on its pattern, ByteLevel, ignore_merges as
Llama 3's file sets it), Qwen2 (NFC, single digits, no ignore_merges) and GPT-2 (ByteLevel
with its own regex) -- and writes HF's ids for test texts (golden.json), including texts of
words the training never saw (every piece goes through the merges).

The output is ~10 MB per tokenizer, so it is not committed: the Go tests build it on demand
into a cache directory (see bigvocab_test.go) and skip when this python is absent.

  ~/.cache/infergw/vllm-venv-0.32.0/bin/python kvprompt/testdata/gen/bigvocab.py OUTDIR [VOCAB]
"""
import json
import os
import random
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

ONSETS = "b c d f g h j k l m n p r s t v w z br ch cl cr dr fl gr pl pr sh st str th tr".split()
VOWELS = "a e i o u ai ea ee ie oo ou y".split()
CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "st", "ck", "rt"]
ACCENTED = "é è à ü ö ä ß ç ñ ø å".split()
SCRIPTS = ["東京", "你好", "世界", "こんにちは", "Привет", "мир", "γειά", "σου", "ελλάδα", "שלום", "مرحبا", "नमस्ते"]
PUNCT = list(".,;:!?()[]{}<>\"'`~@#$%^&*-_=+/\\|") + ["...", "--", "->", "!=", "==", "```", "//", "/*", "*/"]
SPACES = [" "] * 12 + ["  ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "    "]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T"]


def word(rng):
    w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.05:
        i = rng.randrange(len(w) + 1)
        w = w[:i] + rng.choice(ACCENTED) + w[i:]
    if rng.random() < 0.03:
        w = rng.choice(SCRIPTS) + w if rng.random() < 0.5 else w + rng.choice(SCRIPTS)
    return w


def lexicon(rng, n):
    seen, out = set(), []
    while len(out) < n:
        w = word(rng)
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def text(rng, lex, n):
    """n items of Zipf-distributed lexicon words (some capitalized), numbers, punctuation,
    contractions and whitespace."""
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.72:
            w = lex[min(int(rng.paretovariate(0.7)) - 1, len(lex) - 1)] if rng.random() < 0.6 else rng.choice(lex)
            out.append(w.capitalize() if rng.random() < 0.08 else (w.upper() if rng.random() < 0.01 else w))
        elif r < 0.8:
            out.append(str(rng.randint(0, 10 ** rng.randint(1, 7))))
        elif r < 0.9:
            out.append(rng.choice(PUNCT))
        elif r < 0.94:
            out.append(rng.choice(CONTRACTIONS))
        elif r < 0.95:
            out.append(rng.choice(["🙂", "👍🏽", "e\u0301", "ﬁ", "①", "٣", "Ⅻ"]))
        out.append(rng.choice(SPACES) if rng.random() < 0.9 else "")
    return "".join(out)


def build(style, vocab, corpus):
    tk = Tokenizer(models.BPE(ignore_merges=(style == "llama3")))
    if style == "qwen2":
        tk.normalizer = normalizers.NFC()
    if style == "gpt2":
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3 if style == "llama3" else QWEN2), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    tk.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(corpus, trainer=trainer)
    if style == "llama3":
        bos = tk.token_to_id("<|begin_of_text|>")
        tk.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", bos)])
    return tk


def main():
    out = sys.argv[1]
    vocab = int(sys.argv[2]) if len(sys.argv) > 2 else 128256
    rng = random.Random(7)
    lex = lexicon(rng, 400000)
    corpus = [text(rng, lex, 400) for _ in range(40000)]
    unseen = lexicon(random.Random(99), 20000)  # mostly words the training never saw
    trng = random.Random(11)
    tests = [text(trng, lex, trng.randint(1, 120)) for _ in range(150)]
    tests += [text(trng, unseen, trng.randint(1, 120)) for _ in range(150)]
    for style in ("llama3", "qwen2", "gpt2"):
        tk = build(style, vocab, corpus)
        d = os.path.join(out, style)
        os.makedirs(d, exist_ok=True)
        tk.save(os.path.join(d, "tokenizer.json"))
        golden = [{"text": t, "ids": tk.encode(t, add_special_tokens=False).ids,
                   "ids_special": tk.encode(t, add_special_tokens=True).ids} for t in tests]
        with open(os.path.join(d, "golden.json"), "w", encoding="utf-8") as f:
            json.dump(golden, f, ensure_ascii=False, indent=0)
        # Prompts for the benchmarks: about 8 KB of the training distribution, and of words
        # the training never saw.
        with open(os.path.join(d, "prompts.json"), "w", encoding="utf-8") as f:
            json.dump({"seen": text(random.Random(5), lex, 3000), "unseen": text(random.Random(6), unseen, 3000)},
                      f, ensure_ascii=False)
    with open(os.path.join(out, "done"), "w") as f:
        f.write("ok\n")


if __name__ == "__main__":
    main()
