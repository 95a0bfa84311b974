//! Unit tests of config validation.
use super::*;
