"""multidp driver for FPGAs: Intel DFL/OPAE and AMD/Xilinx Alveo (XRT)."""
