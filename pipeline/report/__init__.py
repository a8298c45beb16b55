"""Reports on finished (or running) runs: training curves and a markdown summary (`mtl report`), and the
accuracy-vs-adaptation-steps figure of `mtl evaluate --plot`.

Reading run directories is torch-free; drawing needs matplotlib (the `train` extra), imported only
inside the functions that draw.
"""
