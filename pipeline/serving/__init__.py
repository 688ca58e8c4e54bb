"""What a finished run hands back: model.keras and a self-contained SavedModel (`saved_model`), loading a
run's model and class names (`run_model`), and classifying image files with a SavedModel (`classifier`)."""
