//! nats-server supervisor (placeholder).
