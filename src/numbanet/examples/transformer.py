"""A small transformer learns to reverse sequences: token + position embeddings, two encoder
blocks (self-attention and a feedforward network, residual connections, LayerNormalization)
and a softmax over the vocabulary at every position.

Reversal needs attention across positions: the output at step t is the input at step T-1-t, so
each position must find its mirror. The example prints the held-out per-token and whole-sequence
accuracy and draws the attention weights of the last block for one held-out sequence
(``transformer_attention.png``, with the ``plot`` extra): each head's map should light up the
anti-diagonal, every query looking at its mirror key.
"""
import os
import time

import numpy as np

from . import check_sizes

TITLE = "transformer encoder learning to reverse sequences, with its attention maps"


def add_arguments(p):
    p.add_argument("--samples", type=int, default=8000, help="training sequences")
    p.add_argument("--length", type=int, default=12)
    p.add_argument("--vocab", type=int, default=10)
    p.add_argument("--width", type=int, default=64, help="model width (embedding size)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)


def build(nb, length, vocab, width, heads, blocks):
    """(model, embedding layer, encoder blocks)."""
    L = nb.layers
    inp = nb.Input((length,), dtype="int64")
    embed = L.PositionalEmbedding(length, vocab, width, name="tokens_and_positions")
    encoders = [L.TransformerEncoder(2 * width, heads, name=f"encoder_{i + 1}")
                for i in range(blocks)]
    h = embed(inp)
    for enc in encoders:
        h = enc(h)
    out = L.Dense(vocab, activation="softmax", name="next_token")(h)
    return nb.Model(inp, out, name="reverser"), embed, encoders


def attention_maps(nb, embed, encoders, ids):
    """The last block's attention weights (heads, T, T) for one sequence ``ids`` (T,)."""
    with nb.engine.stop_recording():
        h = embed(ids[None])
        for enc in encoders[:-1]:
            h = enc(h)
        last = encoders[-1]
        q = last.self_attention_norm(h) if last.norm_first else h
        _, weights = last.self_attention(q, q, return_attention_scores=True)
    return np.asarray(weights)[0]


def draw(maps, ids, path):
    from .. import plot
    heads = len(maps)
    fig, axes = plot.figure(1, heads, size=(3.0, 3.0),
                            title="last encoder block: attention weights per head "
                                  "(rows: queries, columns: keys)")
    labels = [str(int(t)) for t in ids]
    for h, ax in enumerate(axes[0]):
        ax.imshow(maps[h], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {h + 1}")
        ax.set_xticks(range(len(ids)), labels, fontsize=7)
        ax.set_yticks(range(len(ids)), labels, fontsize=7)
    return plot.save(fig, path)


def run(args):
    import numbanet as nb
    check_sizes(args, ("samples", "length", "vocab", "width", "heads", "blocks", "epochs",
                       "batch_size"))
    nb.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n_test = max(1, args.samples // 5)
    x = rng.integers(0, args.vocab, (args.samples + n_test, args.length))
    y = x[:, ::-1].copy()
    x_train, y_train, x_test, y_test = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    print(f"transformer: reverse sequences of {args.length} tokens from a vocabulary of "
          f"{args.vocab}; {len(x_train)} training and {n_test} held-out sequences")
    model, embed, encoders = build(nb, args.length, args.vocab, args.width, args.heads,
                                   args.blocks)
    model.to(args.device)
    model.compile(nb.optimizers.Adam(args.learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        seed=args.seed, verbose=args.verbose)
    seconds = time.perf_counter() - start
    pred = model.predict(x_test).argmax(axis=-1)
    token_acc = float((pred == y_test).mean())
    seq_acc = float((pred == y_test).all(axis=1).mean())
    print(f"held-out accuracy: {token_acc:.4f} per token, {seq_acc:.4f} whole sequences "
          f"({seconds:.1f}s of training on {model.device})")
    print(f"example: {x_test[0].tolist()} -> {pred[0].tolist()}")
    result = {"token_accuracy": token_acc, "sequence_accuracy": seq_acc, "seconds": seconds,
              "history": history.history, "attention": attention_maps(nb, embed, encoders,
                                                                      x_test[0])}
    try:
        path = draw(result["attention"], x_test[0],
                    os.path.join(args.output_dir, "transformer_attention.png"))
        print(f"attention maps: {path}")
        result["png"] = path
    except ImportError:
        print("note: matplotlib is not installed, so no attention map is drawn "
              "(pip install numbanet[plot])")
    return result
