//! HTTP/1.1: per-request steering by routing key, hostile clients, and
//! idle keep-alive connections parked and resumed.

mod hostile;
mod parking;
mod routing;
