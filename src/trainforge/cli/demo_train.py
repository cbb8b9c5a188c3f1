"""The training script of ``trainforge demo`` (copied into the job's source directory as train.py).

A softmax (multinomial logistic) regression trained by full-batch gradient descent on the Iris
measurements, in plain Python so that it runs on any interpreter. It follows the SageMaker
script-mode contract: channels from SM_CHANNEL_TRAIN / SM_CHANNEL_VALIDATION, hyperparameters as
``--epochs``/``--learning-rate`` arguments, the model written to SM_MODEL_DIR.
"""

import argparse
import csv
import json
import math
import os
import sys


def load(directory):
    rows = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".csv"):
            with open(os.path.join(directory, name), newline="") as handle:
                rows += list(csv.DictReader(handle))
    features = [[float(r[k]) for k in ("sepal_length", "sepal_width", "petal_length", "petal_width")]
                for r in rows]
    return features, [r["species"] for r in rows]


def standardize(features, means=None, stds=None):
    columns = list(zip(*features))
    if means is None:
        means = [sum(c) / len(c) for c in columns]
        stds = [math.sqrt(sum((x - m) ** 2 for x in c) / len(c)) or 1.0 for c, m in zip(columns, means)]
    return [[(x - m) / s for x, m, s in zip(row, means, stds)] for row in features], means, stds


def probabilities(weights, row):
    scores = [w[0] + sum(wi * xi for wi, xi in zip(w[1:], row)) for w in weights]
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def evaluate(weights, features, labels):
    loss, correct = 0.0, 0
    for row, label in zip(features, labels):
        p = probabilities(weights, row)
        loss -= math.log(max(p[label], 1e-12))
        correct += max(range(len(p)), key=p.__getitem__) == label
    return loss / len(labels), correct / len(labels)


def train(features, labels, classes, epochs, learning_rate):
    width = len(features[0]) + 1
    weights = [[0.0] * width for _ in classes]
    for epoch in range(1, epochs + 1):
        gradient = [[0.0] * width for _ in classes]
        for row, label in zip(features, labels):
            p = probabilities(weights, row)
            for k in range(len(classes)):
                error = p[k] - (1.0 if k == label else 0.0)
                gradient[k][0] += error
                for j, x in enumerate(row):
                    gradient[k][j + 1] += error * x
        for k in range(len(classes)):
            for j in range(width):
                weights[k][j] -= learning_rate * gradient[k][j] / len(labels)
        yield epoch, weights


def number(text):
    return float(str(text).strip('"'))


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=number, default=150)
    parser.add_argument("--learning-rate", type=number, default=0.5)
    args, _ = parser.parse_known_args(argv)
    base = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
    train_dir = os.environ.get("SM_CHANNEL_TRAIN", os.path.join(base, "input/data/train"))
    validation_dir = os.environ.get("SM_CHANNEL_VALIDATION", os.path.join(base, "input/data/validation"))
    model_dir = os.environ.get("SM_MODEL_DIR", os.path.join(base, "model"))

    train_x, train_names = load(train_dir)
    valid_x, valid_names = load(validation_dir)
    classes = sorted(set(train_names))
    train_y = [classes.index(n) for n in train_names]
    valid_y = [classes.index(n) for n in valid_names]
    train_x, means, stds = standardize(train_x)
    valid_x, _, _ = standardize(valid_x, means, stds)
    print(f"training on {len(train_y)} flowers, validating on {len(valid_y)}; classes: {', '.join(classes)}",
          flush=True)

    epochs = int(args.epochs)
    weights = None
    for epoch, weights in train(train_x, train_y, classes, epochs, args.learning_rate):
        if epoch % 25 == 0 or epoch == epochs:
            train_loss, _ = evaluate(weights, train_x, train_y)
            valid_loss, valid_acc = evaluate(weights, valid_x, valid_y)
            print(f"epoch {epoch}: train_loss={train_loss:.4f} validation_loss={valid_loss:.4f} "
                  f"validation_accuracy={valid_acc:.4f}", flush=True)

    os.makedirs(model_dir, exist_ok=True)
    model = {"type": "softmax-regression", "classes": classes,
             "features": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
             "means": means, "stds": stds, "weights": weights}
    with open(os.path.join(model_dir, "model.json"), "w") as handle:
        json.dump(model, handle, indent=2)
    print(f"saved the model to {os.path.join(model_dir, 'model.json')}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
