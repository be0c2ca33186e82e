"""Entry points: each module is a thin ``main(argv)`` over the library, also reachable from ``espnet-slam-aac``."""
