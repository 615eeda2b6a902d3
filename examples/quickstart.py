"""Quickstart: train a small model, register it in the embedded registry, load it back.

    make quickstart        # or: python examples/quickstart.py

Uses the registry under $MLOPS_HOME (default ~/.mlops); run it twice and you get version 2.
"""

from __future__ import annotations

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import mlops_magics as mm


def main() -> None:
    X, y = load_iris(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    model = LogisticRegression(max_iter=500).fit(X_train, y_train)
    print(f"Trained a LogisticRegression on iris: test accuracy {model.score(X_test, y_test):.3f}")

    version = mm.register(model, "iris-quickstart", tags={"algo": "logreg", "data": "iris"},
                          sample=X_test[:5], description="quickstart model", alias="staging")
    print(f"Registered {version.ref} (sha256 {version.sha256[:12]}, {version.size} bytes) "
          f"in {mm.default_registry().home}")

    loaded = mm.load_model("iris-quickstart@staging")
    agree = (loaded.predict(X_test) == model.predict(X_test)).all()
    print(f"Loaded iris-quickstart@staging back (sha256 verified); predictions identical: {bool(agree)}")
    print()
    print(mm.list_models("iris-quickstart"))
    print()
    print("Next: open notebooks/01_register_models.ipynb for the same flow with %register and friends.")


if __name__ == "__main__":
    main()
