//! End-to-end tests: a real server on 127.0.0.1:0 with a temporary database, driven
//! through the real client library (one test binary; helpers in `harness`).

mod harness;

mod accounts;
mod admin;
mod authorization;
mod backup;
mod bench;
mod cluster;
mod connections;
mod console;
mod database;
mod delivery;
mod dist;
mod documented;
mod durability;
mod files;
mod guessing;
mod health;
mod logs;
mod messages;
mod messaging;
mod metrics;
mod names;
mod origin;
mod presence;
mod probing;
mod processes;
mod protocol;
mod proxy;
mod registration;
mod revocation;
mod rooms;
mod search;
mod storage;
mod tls;
mod typing;
mod web;
