"Evaluation: metrics, the shapes classifier, sg2im-evaluate, ablations."
