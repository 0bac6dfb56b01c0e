//! The binary as its users run it: `dispatch-gate` processes started from the
//! outside — the CLI's answers, the README's first session, several `serve`
//! instances on one log, a database outage, a streaming standby, the
//! external worker example, a generated Python client, secrets in custody,
//! and runs executed through the Graph fake.

mod cli;
mod first_session;
mod generated_client;
mod graph_worker;
mod instances;
mod outage;
mod scale_out;
mod secrets_custody;
mod worker_example;
