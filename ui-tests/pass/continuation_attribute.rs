//! `#[continuation(..)]` writes a continuation's `Prior`, `State` and `Error` from the step it
//! continues: the first round names its command, a later round the continuation before it.
#[path = "../support.rs"]
mod support;
use support::*;

impl Fold<Products> for Cancellation {
    fn fold(&mut self, _: &StreamId, _: &ProductEvent) {}
}
impl Fold<Audit> for Cancellation {
    fn fold(&mut self, _: &StreamId, _: &AuditEvent) {}
}

#[derive(Command)]
#[command(state = Cancellation, error = Rejected, continuation = ReleaseStock)]
struct CancelOrder {
    #[slot(Order)]
    order: StreamId,
    audit: StreamId,
}

impl Handle for CancelOrder {
    fn handle(&self, state: &Cancellation, decision: Decision<Self::Streams>) -> Handled<Self> {
        let next = ReleaseStock { audit: self.audit.clone() };
        Ok(decision.discover(state.products.clone(), next))
    }
}

struct ReleaseStock {
    audit: StreamId,
}

#[continuation(command = CancelOrder, slot = Products, next = NoteIt)]
impl Continuation for ReleaseStock {
    fn resume(self, state: &Cancellation, mut decision: Resuming<Self>) -> Resumed<Self> {
        let _ = state;
        for product in decision.targets(Products) {
            decision.emit_to(Products, &product, ProductEvent::Released { units: 1 });
        }
        Ok(decision.discover(self.audit, NoteIt))
    }
}

struct NoteIt;

#[continuation(after = ReleaseStock, slot = Audit)]
impl Continuation for NoteIt {
    fn resume(self, _: &Cancellation, mut decision: Resuming<Self>) -> Resumed<Self> {
        decision.emit(Audit, AuditEvent::Noted).emit(Order, OrderEvent::Cancelled);
        Ok(decision)
    }
}

fn main() {
    let _ = CancelOrder {
        order: StreamId::try_new("order-1").unwrap(),
        audit: StreamId::try_new("audit-1").unwrap(),
    };
}
