//! Schema dumps in the shape of QEMU's `-dump-vmstate`, and the compatibility checker
//! (QEMU's `vmstate-static-checker.py`).
