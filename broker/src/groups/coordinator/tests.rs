//! State machine tests on tokio's paused clock.

use super::*;
