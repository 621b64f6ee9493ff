"""deepcheck: the torch companion of :mod:`linflow` -- flows (linear, RealNVP, GLOW), PGD attacks,
universal perturbations, maximum-likelihood / adversarial / hybrid training, checked against the exact
linear-flow optima. Citations ``R1`` ... ``R7`` are sections of ``docs/theory.md``."""
