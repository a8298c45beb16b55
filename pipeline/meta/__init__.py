"""What meta-learning methods are built from: the one inner loop (`inner`), task heads (`heads`), the learner
(body + head, `learner`), the vmapped meta-batch engine (`batch`) and the algorithm protocol (`algorithm`).
The methods themselves are the modules of `pipeline.algorithms`, one each."""
