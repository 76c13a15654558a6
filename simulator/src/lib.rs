//! stilts-sim: a seeded, single-threaded discrete-event simulator that replays outage scenarios against stilts-core.
