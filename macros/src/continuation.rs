//! `#[continuation(..)]`: the associated types of an `impl Continuation`, from the step it
//! continues.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::{ImplItem, ItemImpl, Type};

use crate::errors::{Errors, shown, unknown_key};

/// What `#[continuation(..)]` says.
#[derive(Default)]
struct Options {
    /// `command = C`: the first round after command `C`.
    command: Option<Type>,
    /// `after = K`: the round after continuation `K`.
    after: Option<Type>,
    slot: Option<Type>,
    next: Option<Type>,
}

const USAGE: &str = "e.g. `#[continuation(command = CancelOrder, slot = Products)]`, or `#[continuation(after = ReleaseStock, slot = Customer, next = ..)]` for a later round";

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let mut options = Options::default();
    let mut in_args = Errors::default();
    let parser = syn::meta::parser(|meta| {
        let key = shown(&meta.path);
        let target = match key.as_str() {
            "command" => &mut options.command,
            "after" => &mut options.after,
            "slot" => &mut options.slot,
            "next" => &mut options.next,
            _ => {
                return unknown_key(
                    &meta,
                    &mut in_args,
                    format!(
                        "unknown key `{key}` in `#[continuation(..)]`; expected `command = Type` (or `after = Type`), `slot = Type` and optionally `next = Type`"
                    ),
                );
            }
        };
        let ty: Type = meta.value()?.parse()?;
        if target.replace(ty).is_some() {
            in_args.push(meta.error(format!("`{key}` is given twice in `#[continuation(..)]`")));
        }
        Ok(())
    });
    // The whole argument list, to point at when an argument is missing.
    let whole = args.clone();
    let parsed = syn::parse::Parser::parse2(parser, args);
    errors.check(in_args.finish());
    errors.check(parsed);

    let mut item: ItemImpl = match syn::parse2(item) {
        Ok(item) => item,
        Err(e) => {
            return Err(syn::Error::new(
                e.span(),
                "`#[continuation(..)]` goes on an `impl Continuation for YourType { fn resume(..) }` block",
            ));
        }
    };
    let is_continuation = item
        .trait_
        .as_ref()
        .and_then(|(_, path, _)| path.segments.last())
        .is_some_and(|last| last.ident == "Continuation");
    if !is_continuation {
        errors.push(syn::Error::new_spanned(
            item.self_ty.as_ref(),
            "`#[continuation(..)]` goes on an `impl Continuation for YourType` block, whose `resume` it leaves as written",
        ));
    }
    for written in &item.items {
        if let ImplItem::Type(ty) = written {
            let name = ty.ident.to_string();
            if ["Prior", "Slot", "State", "Error", "Next"].contains(&name.as_str()) {
                errors.push(syn::Error::new_spanned(
                    &ty.ident,
                    format!(
                        "`type {name}` is written by `#[continuation(..)]`: remove it here (the attribute takes the step it continues, its `slot` and its `next`)"
                    ),
                ));
            }
        }
    }
    let prior = match (&options.command, &options.after) {
        (Some(command), None) => Some((
            quote!(<#command as ::eventcore::Command>::Streams),
            quote!(<#command as ::eventcore::Command>::State),
            quote!(<#command as ::eventcore::Command>::Error),
        )),
        (None, Some(after)) => Some((
            quote!(::eventcore::Extended<
                <#after as ::eventcore::Continuation>::Prior,
                <#after as ::eventcore::Continuation>::Slot,
            >),
            quote!(<#after as ::eventcore::Continuation>::State),
            quote!(<#after as ::eventcore::Continuation>::Error),
        )),
        (Some(_), Some(after)) => {
            errors.push(syn::Error::new_spanned(
                after,
                "`#[continuation(..)]` takes `command = ..` (the first round after a command) or `after = ..` (the round after another continuation), not both",
            ));
            None
        }
        (None, None) => {
            errors.push(syn::Error::new_spanned(
                &whole,
                format!("`#[continuation(..)]` needs the step it continues: `command = Type` or `after = Type`; {USAGE}"),
            ));
            None
        }
    };
    if options.slot.is_none() {
        errors.push(syn::Error::new_spanned(
            &whole,
            format!("`#[continuation(..)]` needs `slot = Type`: the slot whose streams it discovers; {USAGE}"),
        ));
    }
    errors.finish()?;
    let (Some((prior, state, error)), Some(slot)) = (prior, options.slot) else {
        // Not reached: both were reported above, so `finish` returned them.
        return Err(syn::Error::new_spanned(&whole, USAGE));
    };
    let next =
        options.next.map_or_else(|| quote!(::eventcore::NoDiscovery), |n| n.into_token_stream());
    let types: [ImplItem; 5] = [
        syn::parse_quote!(type Prior = #prior;),
        syn::parse_quote!(type Slot = #slot;),
        syn::parse_quote!(type State = #state;),
        syn::parse_quote!(type Error = #error;),
        syn::parse_quote!(type Next = #next;),
    ];
    item.items.splice(0..0, types);
    Ok(item.into_token_stream())
}
