"""A character-level LSTM language model: it learns to continue English text character by
character, then writes text from a prompt.

Data: English prose that ships with Python (the pydoc topic texts). Model: Embedding(vocabulary,
32) -> LSTM(units, return_sequences) -> Dense(vocabulary, softmax) at every position, trained on
windows of ``--seq-len`` characters to predict each next character (sparse categorical
crossentropy per position). It reports the loss in nats per character next to the unigram
entropy of the text (what a model that ignores the context scores), and samples text by feeding
its own predictions back one character at a time, the LSTM's state carried from step to step.
"""
import math
import time

import numpy as np

from . import check_sizes, english_text

TITLE = "character-level LSTM language model on English text that ships with Python"


def add_arguments(p):
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--chars", type=int, default=200000, help="characters of text to train on")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=5e-3)
    p.add_argument("--prompt", default="The ")
    p.add_argument("--length", type=int, default=200, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.6)


def unigram_entropy(ids, vocab_size):
    """Entropy (nats per character) of the characters' frequencies."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def windows(ids, seq_len):
    """(inputs, next-character targets) for non-overlapping windows of ``seq_len``."""
    n = (len(ids) - 1) // seq_len
    x = ids[:n * seq_len].reshape(n, seq_len)
    y = ids[1:n * seq_len + 1].reshape(n, seq_len)
    return x, y


def build(nb, vocab_size, units, device="cpu"):
    """(training model, embedding, lstm, head): the LSTM returns its states too, for sampling."""
    L = nb.layers
    emb = L.Embedding(vocab_size, 32, name="chars")
    lstm = L.LSTM(units, return_sequences=True, return_state=True, name="lstm")
    head = L.Dense(vocab_size, activation="softmax", name="next_char")
    inp = nb.Input((None,), dtype="int64")
    seq, _, _ = lstm(emb(inp))
    model = nb.Model(inp, head(seq), name="char_lstm")
    return model.to(device), emb, lstm, head


def generate(nb, layers, encode, decode, prompt, length, temperature, rng):
    """``prompt`` continued by ``length`` sampled characters (the state carried along)."""
    emb, lstm, head = layers
    out = list(prompt)
    with nb.engine.stop_recording():
        seq, h, c = lstm(emb(np.asarray([encode(prompt)])))
        for _step in range(length):
            probs = np.asarray(head(seq))[0, -1].astype(np.float64)
            logp = np.log(np.maximum(probs, 1e-12)) / max(temperature, 1e-6)
            p = np.exp(logp - logp.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(decode(nxt))
            seq, h, c = lstm(emb(np.asarray([[nxt]])), initial_state=[h, c])
    return "".join(out)


def run(args):
    import numbanet as nb
    if not args.prompt:
        raise ValueError("--prompt must hold at least one character")
    check_sizes(args, ("epochs", "chars", "seq_len", "units", "batch_size"))
    if args.length < 0:
        raise ValueError(f"--length must be at least 0, got {args.length}")
    nb.seed(args.seed)
    text = english_text(args.chars)
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    ids = np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))
    entropy = unigram_entropy(ids, len(chars))
    x, y = windows(ids, args.seq_len)
    if len(x) < 2:
        raise ValueError(f"--chars {args.chars} gives {len(x)} window(s) of --seq-len "
                         f"{args.seq_len}; at least 2 are needed (one to validate on): give more "
                         f"--chars or a smaller --seq-len")
    split = max(1, len(x) // 10)
    x_train, y_train, x_val, y_val = x[split:], y[split:], x[:split], y[:split]
    print(f"char-lstm: {len(text):,} characters of the pydoc topics, {len(chars)} distinct; "
          f"{len(x_train)} training windows of {args.seq_len}; unigram entropy "
          f"{entropy:.3f} nats/char")
    model, *layers = build(nb, len(chars), args.units, args.device)
    model.compile(nb.optimizers.Adam(args.learning_rate, clipnorm=5.0),
                  "sparse_categorical_crossentropy")
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_val, y_val), seed=args.seed, verbose=args.verbose)
    seconds = time.perf_counter() - start
    val = history.history["val_loss"][-1]
    print(f"validation loss {val:.3f} nats/char (perplexity {math.exp(val):.2f}) against the "
          f"unigram entropy {entropy:.3f}; {seconds:.1f}s of training on {model.device}")
    rng = np.random.default_rng(args.seed)
    sample = generate(nb, layers, lambda s: [index.get(ch, 0) for ch in s],
                      lambda i: chars[i], args.prompt, args.length, args.temperature, rng)
    print(f"sample (temperature {args.temperature}):\n{sample}")
    return {"val_loss": val, "unigram_entropy": entropy, "sample": sample,
            "seconds": seconds, "history": history.history}
