"""Next-character prediction, learned online: the founding note's 16-step example.

The text "This is so cool." arrives one character at a time, for ever. At each character
the model predicts the next one, then learns from the truth (prequential, like every
online learner). 'i', 's', 'o' and ' ' are followed by different characters in different
places, so the model must remember where in the sentence it is: that is the state's job.

    python examples/char_rnn.py
"""

from __future__ import annotations

import numpy as np

from streamlstm import OnlineLSTM

TEXT = "This is so cool."


def main(repeats: int = 150, seed: int = 0) -> float:
    vocab = sorted(set(TEXT))
    index = {ch: i for i, ch in enumerate(vocab)}
    one_hot = np.eye(len(vocab))
    model = OnlineLSTM(
        n_inputs=len(vocab), n_outputs=len(vocab), hidden=32, bptt=16,
        loss="cross_entropy", optimizer="adam", lr=1e-2,
        standardize_inputs=False, seed=seed,
    )
    stream = TEXT * repeats
    hits = []
    line = []
    for t in range(len(stream) - 1):
        current, nxt = stream[t], stream[t + 1]
        probs = model.learn_one(one_hot[index[current]], index[nxt])
        guess = vocab[int(np.argmax(probs))]
        hits.append(guess == nxt)
        line.append(guess)
        if (t + 2) % (len(TEXT) * 25) == 0:
            recent = np.mean(hits[-len(TEXT) * 5:])
            print(f"after {t + 2:5d} chars  predicted: {''.join(line[-len(TEXT):])!r}  last 80: {recent:.0%}")
    accuracy = 100.0 * float(np.mean(hits[-len(TEXT) * 10:]))
    print(f"accuracy {accuracy:.1f}% over the last {len(TEXT) * 10} characters")
    return accuracy


if __name__ == "__main__":
    main()
