"""Builds a tiny Llama model, its tokenizer (with a chat template) and a LoRA adapter, all
locally with random weights: no model hub is reachable here, and the gateway test needs a
model vLLM really loads and serves, not a good one.

usage: python build_model.py OUT_DIR
Writes OUT_DIR/model (base model + tokenizer) and OUT_DIR/lora (a PEFT adapter, r=8 on
q/k/v/o). Deterministic: fixed seeds.
"""

import os
import random
import sys

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Chat template: role-tagged turns, then the assistant's tag when a reply is wanted.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def corpus(n_lines: int, rng: random.Random):
    # Syllable words give the BPE trainer something to merge, so text of these words takes
    # about one token per word (the test's long prompts rely on a predictable length).
    syl = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pe", "su", "do", "ba", "gi", "fa"]
    words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 3))) for _ in range(3000)]
    words += "the a of and to in is for on with that this from by as at are be".split()
    for _ in range(n_lines):
        yield " ".join(rng.choice(words) for _ in range(rng.randint(5, 25)))


def main(out: str) -> None:
    rng = random.Random(14)
    torch.manual_seed(14)
    model_dir, lora_dir = os.path.join(out, "model"), os.path.join(out, "lora")

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(20000, rng), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>",
                                   additional_special_tokens=SPECIAL[3:])
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 2048
    fast.save_pretrained(model_dir)

    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=2048, bos_token_id=fast.bos_token_id,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(model_dir)
    params = sum(p.numel() for p in model.parameters())

    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    lora.save_pretrained(lora_dir)
    print(f"built {model_dir} ({params} parameters, vocab {len(fast)}) and {lora_dir}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
