//! The tokio runtime that drives the machine: transports, timers, admin view.
