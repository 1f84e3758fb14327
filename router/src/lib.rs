//! hubify-edge: the edge router in front of every Hubify workspace.
//!
//! The request path is a pure core — [`host`] (Host → label), [`routes`] (label → route),
//! [`decide`] (route + request → decision), [`pages`] (the router's own answers) — gathered in
//! [`front`] (one request → one [`front::Answer`]), and the code that carries answers out: [`h1`],
//! the router's own HTTP/1.1 code for requests without a body or upgrade; [`http2`], the router's
//! HTTP/2 stream loop, which serves streams without a request body itself; and Pingora's proxy
//! in [`proxy`] for everything those two hand over (request bodies, WebSockets, the unusual).
//! [`listen`] accepts both listeners' connections (TLS through [`tls`]); [`app`] assembles
//! listeners from the validated configuration.
//! Certificates come from the `hubify-edge-acme` crate; this crate never issues them.

pub mod app;
pub mod auth;
pub mod bound;
pub mod conn;
pub mod decide;
pub mod fly;
pub mod front;
pub mod h1;
pub mod host;
pub mod http2;
pub mod limits;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod pages;
pub mod proxy;
pub mod proxy_protocol;
pub mod redirect;
pub mod reload;
pub mod request_id;
pub mod routes;
pub mod shutdown;
pub mod tls;
pub mod tunnel;
pub mod upgrade;
pub mod upstream;
