//! `switchyard`: the dev server, access tokens, rooms and load tests from one command.
#![forbid(unsafe_code)]

mod dev;
mod doctor;
mod load;
mod room;
mod token;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about = "Self-hosted real-time media on Kubernetes")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run SFU, TURN, signaling and a demo call page on this machine, no Kubernetes needed.
    Dev(dev::DevArgs),
    /// Check what this network lets through to a deployment: signaling, each TURN server
    /// over UDP, TCP and TLS, and what a user here will get.
    Doctor(doctor::DoctorArgs),
    /// Mint an access token for a participant.
    Token(token::TokenArgs),
    /// Create, list, inspect and close rooms; manage their participants (the Room service).
    Room(room::RoomArgs),
    /// Generate load against a deployment (`load turn`: TURN allocations relaying paced traffic).
    Load(load::LoadArgs),
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Dev(args) => dev::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Token(args) => token::run(args),
        Command::Room(args) => room::run(args),
        Command::Load(args) => load::run(args),
    }
}
