"""What training, inference and reporting share: distributed set-up, run folders, evaluation and metrics, CPU threads."""
