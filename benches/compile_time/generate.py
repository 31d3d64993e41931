#!/usr/bin/env python3
"""Writes a stand-alone crate of N commands over K slots each, in one of six forms.

- `eventcore`: the form the book teaches (quick start, banking example): `#[derive(StreamKey)]`
  ids, `#[derive(Event)]` events, `slot!(pub ..: Event, key = Id)`, a `#[derive(Fold)]` state
  with `impl Apply` per event type, `#[derive(Command)]` with `#[slot(..)]` fields and a
  hand-written `impl Handle` that checks the state and emits one event per slot.
- `shared`: the `eventcore` form with its slots declared once per stream kind (`S0..`, one
  `slot!` each) and named by every command, as the book's examples share `Course` and
  `Student` among their commands; the other forms give every command K slots of its own,
  none shared. The two bracket what a real crate pays for its slots.
- `discovery`: the `eventcore` form, plus one more slot that `handle` discovers (`decision.discover`) and
  a continuation (`continuation = ..`, `impl Continuation`) that emits to all K + 1 slots.
- `hand`: the same events, ids and per-command states, without the executor: for each command
  a function reads its K streams with `Backend::read`, folds them by hand, checks, and appends
  one event per stream with an `AppendRequest` expecting every version read (the shape of
  `hand_written` in `benches/transfer.rs`).
- `hand-discovery`: the `discovery` form's work by hand, as `hand` is the `eventcore` form's:
  each function reads and folds its K streams, checks, then reads and folds the one more
  stream its caller names, checks it, and appends K + 1 events expecting all K + 1 versions.
  The baseline the `discovery` form is compared with.
- `peer`: the same work written against the peer, jwilger/eventcore =2.0.1 from crates.io (a
  different project with the same crate name), in the form its README and manual teach:
  per command a `#[derive(Command)]` struct with K `#[stream] StreamId` fields and an `amount`,
  a state struct (K `u64` totals), and `impl CommandLogic` whose `apply` folds the events into
  the state (saturating) and whose `handle` checks with `require!(.., BenchError::Overflow)`
  (`impl From<BenchError> for CommandError`) and returns one `Added` per stream as
  `NewEvents`. Executed with `execute(&store, cmd, RetryPolicy::new())` on
  `eventcore_memory::InMemoryEventStore`. The peer allows one event type per command
  (`type Event`), its `Event` trait asks every event for its stream, and its `#[stream]` fields
  must be `StreamId`, so: K shared event enums `Ev0..` whose `Added`/`Removed` also carry
  `id: StreamId`, each `impl Event`; one shared enum `Ev { E0(Ev0), .. }` (`impl Event`) that
  is every command's `type Event` (the manual's `SystemEvent { Task(TaskEvent), User(..) }`);
  and plain `StreamId`s instead of K id types (stream `c<j>-<i>` for stream j of command i).
  The crate depends on it as `peer_eventcore = { package = "eventcore", .. }` (plus
  `eventcore-memory`, and `eventcore-types`/`eventcore-macros` pinned to the same release) and
  says `extern crate peer_eventcore as eventcore;`, since the derive expands to `::eventcore::`
  paths. It gets no copy of the repository's lockfile: cargo resolves it.

Every command is executed once from `main` (on `eventcore::Memory`, or the peer's in-memory
store), so the executor's pipeline (or the hand-written function) is monomorphised per command
as in real use.

Types shared by all commands: K id types `Id0..`, K event types `Ev0..` (and `EvD`/`IdD` for
the discovered slot), and in the `shared` form K slot markers `S0..`. Per command: K slot
markers (none in the `shared` form), a state type, the command (and its
continuation), and the `Apply` impls. The generated crate has its own `[workspace]` table and
depends on eventcore by path, so it stays outside the repository's workspace.

Usage: generate.py FORM N K OUT_DIR EVENTCORE_PATH [LOCKFILE]
(FORM: eventcore, shared, discovery, hand or peer; peer ignores EVENTCORE_PATH and LOCKFILE.)
"""

import os
import shutil
import sys

FORMS = ("eventcore", "shared", "discovery", "hand", "hand-discovery", "peer")

# The peer: jwilger/eventcore on crates.io, a different project with the same crate name. Its
# companion crates are pinned to the same release (left alone, `eventcore-types` and
# `eventcore-macros` resolve to a later 2.x); serde, thiserror and tokio at the versions of the
# repository's Cargo.lock (which also resolve for the peer).
PEER_VERSION = "2.0.1"


# The rejection every form's commands return, one variant.
BENCH_ERROR = [
        "#[derive(Debug, thiserror::Error)]",
        "pub enum BenchError {",
        '    #[error("the total would overflow")]',
        "    Overflow,",
        "}",
        "",
]


def package(name, dependencies):
    """A stand-alone manifest: not a member of the repository's workspace."""
    return f"""[package]
name = "{name}"
version = "0.0.0"
edition = "2024"
publish = false

# Stand-alone: not a member of the repository's workspace.
[workspace]

[dependencies]
{dependencies}"""


def manifest(name, eventcore_path):
    return package(
        name,
        f"""eventcore = {{ path = "{eventcore_path}" }}
serde = {{ version = "1", features = ["derive"] }}
thiserror = "2"
tokio = {{ version = "1", default-features = false, features = ["rt", "time"] }}
""",
    )


def peer_manifest(name):
    return package(
        name,
        f"""# jwilger/eventcore, a different crate of the same name: depended on under another key, and
# aliased back to `eventcore` in src/main.rs (its derive expands to `::eventcore::` paths).
peer_eventcore = {{ package = "eventcore", version = "={PEER_VERSION}" }}
# Its in-memory store is a separate crate; types and macros pinned to the same release.
eventcore-memory = "={PEER_VERSION}"
eventcore-types = "={PEER_VERSION}"
eventcore-macros = "={PEER_VERSION}"
serde = {{ version = "=1.0.229", features = ["derive"] }}
thiserror = "=2.0.21"
tokio = {{ version = "=1.54.1", default-features = false, features = ["rt", "time"] }}
""",
    )


def shared(k, discovery):
    out = [
        "//! Generated by benches/compile_time/generate.py: do not edit.",
        "#![allow(dead_code, clippy::all)]",
        "",
        "use eventcore::prelude::*;",
        "use serde::{Deserialize, Serialize};",
        "",
    ]
    kinds = [str(j) for j in range(k)] + (["D"] if discovery else [])
    for j in kinds:
        out += [
            "#[derive(Debug, Clone, PartialEq, Eq, Hash, StreamKey)]",
            f'#[stream_key(category = "c{j.lower()}")]',
            f"pub struct Id{j}(StreamId);",
            "",
            "#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Event)]",
            f"pub enum Ev{j} {{",
            "    Added { amount: u64 },",
            "    Removed { amount: u64 },",
            "}",
            "",
        ]
    out += BENCH_ERROR
    return out


def apply_body(event, field):
    """The `match` of `Apply::apply`, variants named by their type as the book writes them (a
    `use {event}::*` would add an item per fold, which the peer's form does not have)."""
    return [
        "        match event {",
        f"            {event}::Added {{ amount }} => self.{field} = self.{field}.saturating_add(*amount),",
        f"            {event}::Removed {{ amount }} => self.{field} = self.{field}.saturating_sub(*amount),",
        "        }",
    ]


def slot_name(i, j, shared_slots):
    """Slot j of command i: its own `C<i>S<j>`, or the shared `S<j>`."""
    return f"S{j}" if shared_slots else f"C{i}S{j}"


def state(i, k, discovery, derive_fold, shared_slots=False):
    kinds = [str(j) for j in range(k)] + (["D"] if discovery else [])
    out = []
    if derive_fold:
        slots = ", ".join(slot_name(i, j, shared_slots) for j in kinds)
        out += ["#[derive(Debug, Default, Fold)]", f"#[fold({slots})]"]
    else:
        out += ["#[derive(Debug, Default)]"]
    out += [f"pub struct State{i} {{"]
    out += [f"    pub t{j.lower()}: u64," for j in kinds]
    out += ["}", ""]
    if derive_fold:
        for j in kinds:
            out += [f"impl Apply<Ev{j}> for State{i} {{", f"    fn apply(&mut self, event: &Ev{j}) {{"]
            out += apply_body(f"Ev{j}", f"t{j.lower()}")
            out += ["    }", "}", ""]
    return out


def check(i, k):
    return [
        f"        require!(state.t{j}.checked_add(self.amount).is_some(), BenchError::Overflow);"
        for j in range(k)
    ]


def eventcore_command(i, k, discovery, shared_slots=False):
    out = []
    if not shared_slots:
        for j in range(k):
            out.append(f"slot!(pub C{i}S{j}: Ev{j}, key = Id{j});")
        if discovery:
            out.append(f"slot!(pub C{i}SD: EvD, key = IdD);")
        out.append("")
    out += state(i, k, discovery, derive_fold=True, shared_slots=shared_slots)
    out += ["#[derive(Command)]"]
    if discovery:
        out += [f"#[command(state = State{i}, error = BenchError, continuation = Cont{i})]"]
    else:
        out += [f"#[command(state = State{i}, error = BenchError)]"]
    out += [f"pub struct Cmd{i} {{"]
    for j in range(k):
        out += [f"    #[slot({slot_name(i, j, shared_slots)})]", f"    pub s{j}: Id{j},"]
    if discovery:
        out += ["    /// The stream `handle` discovers.", "    pub link: IdD,"]
    out += ["    pub amount: u64,", "}", ""]
    out += [
        f"impl Handle for Cmd{i} {{",
        f"    fn handle(&self, state: &State{i}, {'' if discovery else 'mut '}decision: Decision<Self::Streams>) -> Handled<Self> {{",
    ]
    out += check(i, k)
    if discovery:
        out += [
            f"        let next = Cont{i} {{ amount: self.amount }};",
            "        Ok(decision.discover(self.link.clone(), next))",
            "    }",
            "}",
            "",
            f"pub struct Cont{i} {{",
            "    amount: u64,",
            "}",
            "",
            f"#[continuation(command = Cmd{i}, slot = C{i}SD)]",
            f"impl Continuation for Cont{i} {{",
            f"    fn resume(self, state: &State{i}, mut decision: Resuming<Self>) -> Resumed<Self> {{",
            "        require!(state.td.checked_add(self.amount).is_some(), BenchError::Overflow);",
        ]
    emits = [
        f"            .emit({slot_name(i, j, shared_slots)}, Ev{j}::Added {{ amount: self.amount }})"
        for j in range(k)
    ]
    if discovery:
        emits.append(f"            .emit(C{i}SD, EvD::Added {{ amount: self.amount }})")
    out += ["        decision"] + emits
    out[-1] += ";"
    out += ["        Ok(decision)", "    }", "}", ""]
    return out


def hand_command(i, k, discovery=False):
    """Command i by hand, without the executor: read and fold its K streams, check, then, with
    `discovery`, read and fold the stream its caller names (`link`) and check it too; append
    one event per stream read, expecting the version of each."""
    out = state(i, k, discovery=discovery, derive_fold=False)
    if discovery:
        doc, link = "read, fold, check; read the linked stream, fold, check; append.", ", link: StreamId"
    else:
        doc, link = "read, fold, check, append one event per stream.", ""
    out += [
        f"/// Command {i}, by hand: {doc}",
        f"pub async fn cmd{i}(store: &Memory, ids: [StreamId; {k}]{link}, amount: u64) -> Result<(), Box<dyn std::error::Error>> {{",
        "    let read = store.read(&ids).await?;",
        f"    let mut state = State{i}::default();",
    ]
    for j in range(k):
        out += fold_by_hand(f"read[{j}]", f"Ev{j}", f"t{j}")
    for j in range(k):
        out += check_by_hand(f"t{j}")
    if discovery:
        out += ["    let linked = store.read(std::slice::from_ref(&link)).await?;"]
        out += fold_by_hand("linked[0]", "EvD", "td")
        out += check_by_hand("td")
    out += ["    let ctx = RequestContext::new();"]
    for j in range(k):
        out += [f"    let e{j} = NewEvent::from_event(&Ev{j}::Added {{ amount }}, ctx.stamp())?;"]
    if discovery:
        out += ["    let ed = NewEvent::from_event(&EvD::Added { amount }, ctx.stamp())?;"]
    out += [f"    let [{', '.join(f'i{j}' for j in range(k))}] = ids;", "    let request = AppendRequest::new()"]
    out += [f"        .expect(i{j}.clone(), read[{j}].version)" for j in range(k)]
    if discovery:
        out += ["        .expect(link.clone(), linked[0].version)"]
    out += [f"        .write(i{j}, vec![e{j}])" for j in range(k)]
    if discovery:
        out += ["        .write(link, vec![ed])"]
    out[-1] += ";"
    out += ["    store.append(request).await?;", "    Ok(())", "}", ""]
    return out


def fold_by_hand(read, event, field):
    """Folds the events of `read` (a `StreamEvents`) into `state.<field>`, by hand."""
    return [
        f"    for event in &{read}.events {{",
        f"        match event.decode::<{event}>()? {{",
        f"            {event}::Added {{ amount }} => state.{field} = state.{field}.saturating_add(amount),",
        f"            {event}::Removed {{ amount }} => state.{field} = state.{field}.saturating_sub(amount),",
        "        }",
        "    }",
    ]


def check_by_hand(field):
    return [
        f"    if state.{field}.checked_add(amount).is_none() {{",
        "        return Err(BenchError::Overflow.into());",
        "    }",
    ]


def peer_event_impl(name, arms):
    """The peer's `impl Event` for enum `name`: `stream_id` by the given match arms, and the
    type's name."""
    out = [
        f"impl Event for {name} {{",
        "    fn stream_id(&self) -> &StreamId {",
        "        match self {",
    ]
    out += [f"            {arm}" for arm in arms]
    out += [
        "        }",
        "    }",
        "",
        "    fn event_type_name() -> &'static str {",
        f'        "{name}"',
        "    }",
        "}",
        "",
    ]
    return out


def peer_shared(k):
    """The peer's types: K event enums (its `Event` trait asks each event for the stream it
    belongs to, so each variant carries a `StreamId`) and one enum over them, `Ev`, that every
    command uses as its single `type Event` (the manual's `SystemEvent { Task(TaskEvent),
    User(UserEvent) }` pattern, getting-started chapters 2.2 and 2.3)."""
    out = [
        "//! Generated by benches/compile_time/generate.py: do not edit.",
        "#![allow(dead_code, clippy::all)]",
        "",
        "// jwilger/eventcore, depended on as `peer_eventcore`: its `#[derive(Command)]` expands",
        "// to `::eventcore::..` paths, so the crate is given that name back here.",
        "extern crate peer_eventcore as eventcore;",
        "",
        "use eventcore::{",
        "    Command, CommandError, CommandLogic, Event, NewEvents, RetryPolicy, StreamId, execute, require,",
        "};",
        "use eventcore_memory::InMemoryEventStore;",
        "use serde::{Deserialize, Serialize};",
        "",
    ]
    for j in range(k):
        out += [
            "#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]",
            f"pub enum Ev{j} {{",
            "    Added { id: StreamId, amount: u64 },",
            "    Removed { id: StreamId, amount: u64 },",
            "}",
            "",
        ]
        out += peer_event_impl(f"Ev{j}", [f"Ev{j}::Added {{ id, .. }} | Ev{j}::Removed {{ id, .. }} => id,"])
    out += [
        "/// The one event type of every command: one variant per stream kind.",
        "#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]",
        "pub enum Ev {",
    ]
    out += [f"    E{j}(Ev{j})," for j in range(k)]
    out += ["}", ""]
    out += peer_event_impl("Ev", [f"Ev::E{j}(event) => event.stream_id()," for j in range(k)])
    out += BENCH_ERROR
    out += [
        "impl From<BenchError> for CommandError {",
        "    fn from(error: BenchError) -> Self {",
        "        CommandError::BusinessRuleViolation(Box::new(error))",
        "    }",
        "}",
        "",
    ]
    return out


def peer_command(i, k):
    """One command in the peer's form: `#[derive(Command)]` with K `#[stream] StreamId` fields,
    and `impl CommandLogic` whose `apply` folds `Ev` into the state and whose `handle` checks
    with `require!` and returns one event per stream."""
    out = state(i, k, discovery=False, derive_fold=False)
    out += ["#[derive(Command)]", f"pub struct Cmd{i} {{"]
    for j in range(k):
        out += ["    #[stream]", f"    pub s{j}: StreamId,"]
    out += ["    pub amount: u64,", "}", ""]
    out += [
        f"impl CommandLogic for Cmd{i} {{",
        "    type Event = Ev;",
        f"    type State = State{i};",
        "",
        "    fn apply(&self, mut state: Self::State, event: &Self::Event) -> Self::State {",
        "        match event {",
    ]
    for j in range(k):
        out += [
            f"            Ev::E{j}(event) => match event {{",
            f"                Ev{j}::Added {{ amount, .. }} => state.t{j} = state.t{j}.saturating_add(*amount),",
            f"                Ev{j}::Removed {{ amount, .. }} => state.t{j} = state.t{j}.saturating_sub(*amount),",
            "            },",
        ]
    out += [
        "        }",
        "        state",
        "    }",
        "",
        "    fn handle(&self, state: Self::State) -> Result<NewEvents<Self::Event>, CommandError> {",
    ]
    out += check(i, k)
    out += ["        Ok(vec!["]
    out += [f"            Ev::E{j}(Ev{j}::Added {{ id: self.s{j}.clone(), amount: self.amount }})," for j in range(k)]
    out += ["        ]", "        .into())", "    }", "}", ""]
    return out


def main_fn(form, n, k):
    kinds = [str(j) for j in range(k)] + (["D"] if form in ("discovery", "hand-discovery") else [])
    out = [
        "fn main() {",
        "    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();",
        "    runtime.block_on(async {",
        "        let store = InMemoryEventStore::new();" if form == "peer" else "        let store = Memory::new();",
    ]
    if form not in ("hand", "hand-discovery", "peer"):
        out += ["        let executor = Executor::new(store.clone());"]
    for i in range(n):
        if form == "hand":
            ids = ", ".join(f'Id{j}::try_new("{i}").unwrap().into_stream_id()' for j in kinds)
            out += [f"        cmd{i}(&store, [{ids}], {i + 1}).await.unwrap();"]
        elif form == "hand-discovery":
            ids = ", ".join(f'Id{j}::try_new("{i}").unwrap().into_stream_id()' for j in kinds if j != "D")
            link = f'IdD::try_new("{i}").unwrap().into_stream_id()'
            out += [f"        cmd{i}(&store, [{ids}], {link}, {i + 1}).await.unwrap();"]
        elif form == "peer":
            fields = " ".join(f's{j}: StreamId::try_new("c{j}-{i}").unwrap(),' for j in kinds)
            out += [f"        execute(&store, Cmd{i} {{ {fields} amount: {i + 1} }}, RetryPolicy::new()).await.unwrap();"]
        else:
            fields = " ".join(
                f'{"link" if j == "D" else "s" + j}: Id{j}::try_new("{i}").unwrap(),' for j in kinds
            )
            out += [f"        executor.execute(&Cmd{i} {{ {fields} amount: {i + 1} }}).await.unwrap();"]
    out += [f'        println!("{n} commands executed");', "    });", "}", ""]
    return out


def source(form, n, k):
    if form == "peer":
        out = peer_shared(k)
        for i in range(n):
            out += peer_command(i, k)
        return "\n".join(out + main_fn(form, n, k))
    out = shared(k, discovery=form in ("discovery", "hand-discovery"))
    if form in ("hand", "hand-discovery"):
        out += [
            "use eventcore::backend::AppendRequest;",
            "use eventcore::{NewEvent, RequestContext};",
            "",
        ]
    if form == "shared":
        out += [f"slot!(pub S{j}: Ev{j}, key = Id{j});" for j in range(k)] + [""]
    for i in range(n):
        if form == "hand":
            out += hand_command(i, k)
        elif form == "hand-discovery":
            out += hand_command(i, k, discovery=True)
        else:
            out += eventcore_command(i, k, form == "discovery", shared_slots=form == "shared")
    out += main_fn(form, n, k)
    return "\n".join(out)


def write_crate(form, n, k, out_dir, eventcore_path, lockfile=None):
    """Writes the crate (Cargo.toml, src/main.rs, and a copy of the repository's Cargo.lock so
    the dependency versions are the library's own) and returns its main file's path. The `peer`
    crate does not depend on eventcore_path and gets no copy of the lockfile: cargo resolves its
    dependencies (online, the first time: `cargo fetch`, as run.py does)."""
    assert form in FORMS, form
    os.makedirs(os.path.join(out_dir, "src"), exist_ok=True)
    name = f"ct_{form}_n{n}_k{k}"
    if form == "peer":
        text, lockfile = peer_manifest(name), None
    else:
        text = manifest(name, os.path.relpath(eventcore_path, out_dir))
    with open(os.path.join(out_dir, "Cargo.toml"), "w") as f:
        f.write(text)
    main = os.path.join(out_dir, "src", "main.rs")
    text = source(form, n, k)
    # Rewrite only when changed, so regenerating does not dirty an unchanged crate.
    if not os.path.exists(main) or open(main).read() != text:
        with open(main, "w") as f:
            f.write(text)
    if lockfile and not os.path.exists(os.path.join(out_dir, "Cargo.lock")):
        shutil.copy(lockfile, os.path.join(out_dir, "Cargo.lock"))
    return main


if __name__ == "__main__":
    if len(sys.argv) not in (6, 7):
        sys.exit(__doc__)
    form, n, k, out_dir, ec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    print(write_crate(form, n, k, out_dir, ec, sys.argv[6] if len(sys.argv) == 7 else None))
