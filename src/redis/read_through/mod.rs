//! Read-through's Redis side: the loads in progress and the clients waiting for
//! them ([`loads`]), and what each waiting client gets ([`answer`]). The command
//! and the filter's probe are entry points, in `server::read_through`.

pub mod answer;
pub mod loads;
