//! Releases of an emulator and the section versions each understands, for saving a
//! stream that an older release can load.
