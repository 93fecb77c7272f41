"""The digits example's data, and scikit-learn's figures to hold the C++ example to.

Rerun from the repository's root (Debian 12: apt-get install -y python3-sklearn):

    /usr/bin/python3 examples/data/gen_digits.py

scikit-learn's digits data set (1797 images of 8 x 8 pixels, intensities 0 ... 16, ten classes;
shipped inside python3-sklearn, no download) is scaled to [0, 1] and split, stratified with a fixed
seed, into 1347 training and 450 held-out images. It writes, in examples/data/:

    digits_train_x.npy  float32 (1347, 64)    digits_train_y.npy  int64 (1347,)
    digits_test_x.npy   float32 (450, 64)     digits_test_y.npy   int64 (450,)
    digits_sklearn.txt  scikit-learn's held-out log-loss and accuracy, read by the C++ example

and prints the figures of scikit-learn's LogisticRegression on the same split. That model minimises
sum_i -log p(y_i | x_i) + ||W||^2 / (2 C) with C = 1 (the intercepts unpenalised): the objective that
examples/digits_softmax.cpp minimises by gradient descent, written per sample (mean loss plus
||W||^2 / (2 C n)). Both should reach the same optimum, so the figures should agree to about 3 digits.
"""

import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
TEST_SIZE = 450
C = 1.0


def main():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_SIZE, random_state=SEED, stratify=y)
    for name, a in [("train_x", x_train), ("train_y", y_train), ("test_x", x_test), ("test_y", y_test)]:
        np.save(os.path.join(HERE, f"digits_{name}.npy"), np.ascontiguousarray(a))

    # Tight tolerance: the optimum itself, not lbfgs's default stopping point, is what the C++
    # example is compared with. Fitted in float64 on the same float32 features.
    model = LogisticRegression(C=C, tol=1e-10, max_iter=10000)
    model.fit(x_train.astype(np.float64), y_train)
    p = model.predict_proba(x_test.astype(np.float64))
    nll = log_loss(y_test, p, labels=np.arange(10))
    accuracy = accuracy_score(y_test, model.predict(x_test.astype(np.float64)))
    train_nll = log_loss(y_train, model.predict_proba(x_train.astype(np.float64)), labels=np.arange(10))
    objective = train_nll + 0.5 / C * np.sum(model.coef_**2) / len(y_train)
    print(f"digits: {len(y_train)} training and {len(y_test)} held-out images, 64 pixels, 10 classes (seed {SEED})")
    print(f"scikit-learn LogisticRegression (lbfgs, C = {C}, {model.n_iter_[0]} iterations):")
    print(f"  training objective {objective:.6f} (mean log-loss {train_nll:.6f} + L2 term)")
    print(f"  held-out log-loss  {nll:.6f} nats")
    print(f"  held-out accuracy  {accuracy:.4f}")
    with open(os.path.join(HERE, "digits_sklearn.txt"), "w") as f:
        f.write(f"objective {objective:.9f}\nlog_loss {nll:.9f}\naccuracy {accuracy:.9f}\n")


if __name__ == "__main__":
    main()
