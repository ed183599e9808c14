//! Secure comparison (in progress).
