//! Sophia is the planner of LOGOS: it turns a goal into a plan of action steps, rolls plans
//! forward to imagine the states they lead to, and keeps both the world state (CWM state) and the
//! graph of goals, plans, steps and simulations (HCG). These modules are the domain logic, free of
//! HTTP; the routes call them.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod hcg;
pub mod hermes;
pub mod planner;
pub mod routes;
pub mod simulate;
pub mod state;
