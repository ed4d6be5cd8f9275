//! `salon bench search`: full-text search latency on a large history (issue 14). Stores
//! `--messages` messages (default 1,000,000) straight into the database through the
//! provisioning API — the same insert as the message writer, so they are indexed as
//! they are stored — half in Général (every bench user is a member) and half in Blabla
//! (nobody is), with words drawn from a Zipf-like distribution over a vocabulary of
//! French words and made-up ones, so some words are in one message in ten and others in
//! a handful. Then one user runs searches of several kinds, one at a time, through the
//! protocol, and the result gives each kind's latency as the client sees it.

use std::time::Instant;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use salon_client::Client;
use salon_proto::{args, SearchOrder};
use salon_server::provision::{OfflineTool, Provisioner};

use super::{database_config, histogram, ms, Report, Target};

/// Messages stored per transaction while seeding.
const SEED_BATCH: usize = 20_000;

/// Real words first (the most frequent ranks), then made-up ones up to [`VOCABULARY`].
const WORDS: &[&str] = &[
    "le",
    "de",
    "la",
    "et",
    "les",
    "des",
    "est",
    "un",
    "une",
    "pour",
    "dans",
    "que",
    "pas",
    "sur",
    "avec",
    "réunion",
    "projet",
    "demain",
    "général",
    "planning",
    "équipe",
    "client",
    "budget",
    "lien",
    "dossier",
    "semaine",
    "matin",
    "après",
    "midi",
    "café",
    "bureau",
    "rapport",
    "version",
    "serveur",
    "base",
    "données",
    "sécurité",
    "mise",
    "jour",
    "réponse",
    "question",
    "problème",
    "solution",
    "facture",
    "comptabilité",
    "marketing",
    "informatique",
    "présentation",
    "document",
    "fichier",
    "compte",
    "accès",
    "mot",
    "passe",
    "réseau",
    "imprimante",
    "congés",
    "vacances",
    "télétravail",
    "déjeuner",
    "anniversaire",
    "formation",
    "entretien",
    "recrutement",
    "contrat",
    "signature",
    "livraison",
    "commande",
    "stock",
    "inventaire",
    "audit",
    "conformité",
    "juridique",
    "stratégie",
    "objectif",
    "trimestre",
    "résultat",
    "chiffre",
    "affaires",
    "prévision",
    "salon",
    "écran",
    "clavier",
];

/// Distinct words messages are made of.
const VOCABULARY: usize = 20_000;

fn word(rank: usize) -> String {
    match WORDS.get(rank) {
        Some(w) => (*w).to_owned(),
        None => format!("mot{rank}x"),
    }
}

/// A rank from 0 with probability about proportional to 1 / (rank + 1) (Zipf, s = 1).
fn zipf_rank(rng: &mut StdRng) -> usize {
    let u: f64 = rng.gen();
    let rank = ((VOCABULARY as f64 + 1.0).powf(u) - 1.0) as usize;
    rank.min(VOCABULARY - 1)
}

fn body(rng: &mut StdRng) -> String {
    let n = rng.gen_range(6..=14);
    (0..n)
        .map(|_| word(zipf_rank(rng)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One kind of search the workload runs.
struct Kind {
    name: &'static str,
    args: args::Search,
}

fn kinds() -> Vec<Kind> {
    let q = |text: &str| args::Search {
        query: text.to_owned(),
        ..args::Search::default()
    };
    vec![
        Kind {
            name: "very frequent word (in 1 message of ~10)",
            args: q("pour"),
        },
        Kind {
            name: "frequent word (1 of ~17), accents left out",
            args: q("reunion"),
        },
        Kind {
            name: "3-letter prefix of a frequent word",
            args: q("reu"),
        },
        Kind {
            name: "mid-frequency word (1 of ~60)",
            args: q("congés"),
        },
        Kind {
            name: "rare word (1 of ~5,000)",
            args: q("mot5001x"),
        },
        Kind {
            name: "two words (frequent + mid)",
            args: q("projet congés"),
        },
        Kind {
            name: "no match",
            args: q("introuvable"),
        },
        Kind {
            name: "frequent word, one room",
            args: args::Search {
                room: Some("Général".into()),
                ..q("reunion")
            },
        },
        Kind {
            name: "mid-frequency word, by relevance",
            args: args::Search {
                order: SearchOrder::Relevance,
                ..q("congés")
            },
        },
        Kind {
            name: "frequent word, by relevance",
            args: args::Search {
                order: SearchOrder::Relevance,
                ..q("reunion")
            },
        },
    ]
}

pub(super) async fn search(
    target: &Target,
    messages: usize,
    rounds: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.line(format!(
        "workload:  search — {messages} messages stored (half in a room the searcher is \
         not in), then {rounds} searches of each of {} kinds, one at a time",
        kinds().len()
    ));
    let user = target.users.first().context("no bench user")?;
    let seeding = Instant::now();
    seed(&target.database, user.id, messages).await?;
    let seconds = seeding.elapsed().as_secs_f64();
    report.line(format!(
        "seeding:   {messages} messages stored and indexed in {seconds:.1} s \
         ({:.0} messages/s, {SEED_BATCH} per transaction, provisioning API)",
        messages as f64 / seconds
    ));

    let client = Client::connect_tcp(target.addr.as_str()).await?;
    client.resume(&user.token).await?;
    let mut all = histogram();
    for kind in kinds() {
        // One untimed search first: the first touch of each index page is disk, not
        // search.
        let first = client.search(kind.args.clone()).await?;
        let mut h = histogram();
        for _ in 0..rounds {
            let started = Instant::now();
            let page = client.search(kind.args.clone()).await?;
            let us = started.elapsed().as_micros() as u64;
            h.record(us.max(1))?;
            all.record(us.max(1))?;
            anyhow::ensure!(page.hits.len() == first.hits.len(), "results changed");
        }
        report.line(format!(
            "search:    {:<48} {:>2} hits  p50 {} ms, p95 {} ms, p99 {} ms, max {} ms",
            kind.name,
            first.hits.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.95)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        ));
    }
    report.line(format!(
        "result:    all searches: p50 {} ms, p95 {} ms, p99 {} ms (target: p95 under 100 ms)",
        ms(all.value_at_quantile(0.5)),
        ms(all.value_at_quantile(0.95)),
        ms(all.value_at_quantile(0.99)),
    ));
    client.close().await;
    Ok(())
}

/// Stores `n` messages by `author`, alternately in Général and Blabla.
async fn seed(database: &str, author: i64, n: usize) -> anyhow::Result<()> {
    let provisioner = Provisioner::open(&database_config(database), OfflineTool::Bench).await?;
    let mut rng = StdRng::seed_from_u64(14);
    let mut stored = 0;
    let result = async {
        while stored < n {
            let count = SEED_BATCH.min(n - stored);
            for (room, share) in [("Général", count.div_ceil(2)), ("Blabla", count / 2)] {
                let bodies = (0..share).map(|_| body(&mut rng)).collect();
                provisioner.seed_room_messages(room, author, bodies).await?;
            }
            stored += count;
        }
        anyhow::Ok(())
    }
    .await;
    provisioner.close().await;
    result
}
