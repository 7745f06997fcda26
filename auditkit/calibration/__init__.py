"""The calibration suite: what a model draws (truth), synthetic stores with known answers, and
the rates at which each significance rule calls null-sized leans and finds large ones."""
