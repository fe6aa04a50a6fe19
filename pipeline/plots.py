"""PNG plots of a training run, returned as bytes so the caller writes them atomically.
matplotlib is imported inside the functions, with the Agg backend: no display needed."""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import threading


def _pyplot():
    """matplotlib.pyplot, on the Agg backend. Its first import (after the first epoch, a second or
    so) holds a Ctrl-C back until it is done: interrupted half-way, matplotlib's C extensions fail
    to initialise ("ImportError: initialization failed", at times a crash as Python exits), where a
    Ctrl-C must stop training with "interrupted; ... resume with"."""
    if "matplotlib.pyplot" not in sys.modules:
        with ctrl_c_held_back():
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.backends.backend_agg  # noqa: F401  (a C extension too, else first loaded by the first figure)
            import matplotlib.pyplot  # noqa: F401
            import matplotlib.ticker  # noqa: F401
    return sys.modules["matplotlib.pyplot"]


@contextlib.contextmanager
def ctrl_c_held_back():
    """Run the block to its end even if Ctrl-C (SIGINT) comes meanwhile; then raise KeyboardInterrupt.
    Where SIGINT does not raise KeyboardInterrupt (ignored, as in a background job, or handled by the
    caller), or off the main thread (which alone runs Python's signal handlers), it changes nothing."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught = []
    signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    except BaseException as e:
        if caught:  # the Ctrl-C is what the user asked for, whatever else went wrong meanwhile
            raise KeyboardInterrupt from e
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


def curves_png(history: list[dict]) -> bytes:
    """Loss and accuracies per epoch (training, validation windows, validation videos). Readable at
    any epoch count: markers (one epoch is a point, not an invisible line), whole-number epoch
    ticks, and the legends below the axes, where they cannot cover a curve."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in history]
    style = {"markersize": 5 if len(epochs) <= 40 else 3, "linewidth": 1.5}  # a marker shape per curve: equal
    # values (all at accuracy 1.0, say) still show every curve
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    ax_loss.plot(epochs, [m["train_loss"] for m in history], label="train", marker="o", **style)
    ax_acc.plot(epochs, [m["train_acc"] for m in history], label="train windows", marker="o", **style)
    if any(m.get("val_loss") is not None for m in history):
        ax_loss.plot(epochs, [m.get("val_loss") for m in history], label="validation", marker="s", **style)
        ax_acc.plot(epochs, [m.get("val_window_acc") for m in history], label="validation windows", marker="s", **style)
        ax_acc.plot(epochs, [m.get("val_video_acc") for m in history], label="validation videos",
                    marker="^", linestyle="--", **style)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(-0.02, 1.04))
    low, high = (min(epochs), max(epochs)) if epochs else (1, 1)
    pad = max(0.5, 0.03 * (high - low))  # one epoch: a point in the middle, not on the frame
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(low - pad, high + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False, fontsize="small")
    return _png(fig)


def confusion_png(confusion: list[list[int]], labels: list[str], title: str) -> bytes:
    """Confusion matrix, rows = true label, columns = predicted label, counts in the cells."""
    plt = _pyplot()
    n = len(labels)
    size = min(4 + 0.4 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 30:
        top = max((max(row) for row in confusion), default=0)
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    fig.tight_layout()
    return _png(fig)
