//! The expansions, compared token for token with what a person writes, and the macros' own
//! errors. `tests/derive.rs` in eventcore runs the generated code.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

fn same(actual: syn::Result<TokenStream>, expected: TokenStream) {
    let actual = actual.unwrap_or_else(|e| panic!("unexpected error: {e}"));
    assert_eq!(printed(actual), printed(expected));
}

/// Tokens printed after a round trip through syn, so that the same tokens print the same:
/// `quote!` prints the `>>` closing two generic lists differently from `> >`.
fn printed(tokens: TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).unwrap_or_else(|e| panic!("not items: {e}"));
    quote!(#file).to_string()
}

/// Every error message of a failed expansion.
fn errors(actual: syn::Result<TokenStream>) -> Vec<String> {
    match actual {
        Ok(tokens) => panic!("expected errors, got {tokens}"),
        Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

/// The full expansion, checked against the fast path's wherever the fast path takes the input.
fn command(input: DeriveInput) -> syn::Result<TokenStream> {
    let full = crate::command::expand(&input);
    agrees(crate::fast::command::<crate::fast::Fallback>(quote!(#input)), &full);
    full
}

/// The fast path wrote what the full one does, token for token (their spans are checked by
/// the ui tests, whose inputs take the fast path), or left the input to it.
fn agrees(fast: Option<TokenStream>, full: &syn::Result<TokenStream>) {
    let Some(fast) = fast else { return };
    match full {
        Ok(full) => assert_eq!(trees(fast), trees(full.clone())),
        Err(e) => panic!("the fast path expanded what the full one rejects: {e}"),
    }
}

/// Tokens as text, one per line, groups bracketed: equal when the trees are, whatever the
/// spacing (`>` joined to a following `,` by the compiler, not by `quote!`).
fn trees(tokens: TokenStream) -> Vec<String> {
    let mut out = Vec::new();
    for tree in tokens {
        match tree {
            proc_macro2::TokenTree::Group(g) => {
                out.push(format!("open {:?}", g.delimiter()));
                out.extend(trees(g.stream()));
                out.push("close".to_owned());
            }
            other => out.push(other.to_string()),
        }
    }
    out
}

#[test]
fn a_command_expands_to_the_hand_written_impl() {
    let input = syn::parse_quote! {
        #[command(state = TransferState, error = BankError)]
        pub struct Transfer {
            #[slot(FromAccount)] from: AccountId,
            #[slot(ToAccount)] to: AccountId,
            #[slot(Ledger)] id: TransferId,
            amount: Money,
            #[key] key: IdempotencyKey,
        }
    };
    same(
        command(input),
        quote! {
            impl ::eventcore::Command for Transfer {
                type Streams = ::eventcore::__derive::Set3<FromAccount, ToAccount, Ledger>;
                type State = TransferState;
                type Error = BankError;
                type Continuation = ::eventcore::NoDiscovery;

                fn streams(&self) -> ::eventcore::Bindings<Self::Streams> {
                    ::core::convert::From::from((
                        { let this = self; ::eventcore::__derive::bind::<FromAccount, TransferState>(&this.from) },
                        { let this = self; ::eventcore::__derive::bind::<ToAccount, TransferState>(&this.to) },
                        { let this = self; ::eventcore::__derive::bind::<Ledger, TransferState>(&this.id) },
                    ))
                }

                fn idempotency_key(&self) -> ::core::option::Option<::eventcore::IdempotencyKey> {
                    let this = self;
                    ::eventcore::__derive::KeyField::idempotency_key(&this.key)
                }
            }
        },
    );
}

#[test]
fn a_command_keeps_its_generics_and_names_its_continuation() {
    // Generic: no per-slot fold checks (the state depends on the parameters), only the impl.
    let input = syn::parse_quote! {
        #[command(state = History<T>, error = E, continuation = Release<T>)]
        struct Tally<T: Send> where T: Sync { #[slot(Account)] account: AccountId, t: T }
    };
    same(
        command(input),
        quote! {
            impl<T: Send> ::eventcore::Command for Tally<T> where T: Sync {
                type Streams = ::eventcore::__derive::Set1<Account>;
                type State = History<T>;
                type Error = E;
                type Continuation = Release<T>;

                fn streams(&self) -> ::eventcore::Bindings<Self::Streams> {
                    ::core::convert::From::from((
                        { let this = self; <Account as ::eventcore::Slot>::bind(<AccountId as ::core::clone::Clone>::clone(&this.account)) },
                    ))
                }
            }
        },
    );
}

/// A command of `n` slots `S0..`, each bound by a field `f0..` of type `Id`.
fn slots_command(n: usize) -> DeriveInput {
    let fields: String = (0..n).map(|i| format!("#[slot(S{i})] f{i}: Id, ")).collect();
    syn::parse_str(&format!("#[command(state = St, error = E)] struct Wide {{ {fields} }}"))
        .unwrap()
}

#[test]
fn bindings_are_a_tuple_up_to_sixteen_slots_then_nested_cells() {
    let flat = printed(command(slots_command(16)).unwrap());
    assert!(flat.contains(":: core :: convert :: From :: from (("), "{flat}");
    assert!(!flat.contains("head"), "{flat}");
    assert_eq!(flat.matches(":: eventcore :: __derive :: bind :: <").count(), 16);

    let nested = printed(command(slots_command(17)).unwrap());
    assert!(!nested.contains("From :: from"), "{nested}");
    assert_eq!(nested.matches("head :").count(), 17, "{nested}");
    assert_eq!(nested.matches(":: eventcore :: __derive :: bind :: <").count(), 17);
    // The set: `Set16<S0, ..>` (an alias of the same `HCons` cells), then the cells themselves.
    assert!(
        flat.contains("type Streams = :: eventcore :: __derive :: Set16 < S0 , S1 ,"),
        "{flat}"
    );
    assert_eq!(nested.matches("type Streams = :: eventcore :: command :: HCons < S0 ,").count(), 1);
    assert_eq!(nested.matches(":: eventcore :: command :: HCons <").count(), 17);
}

#[test]
fn a_command_without_slots_has_the_empty_set() {
    let input = syn::parse_quote! {
        #[command(state = (), error = E)]
        struct Nothing {}
    };
    let tokens = command(input).unwrap().to_string();
    assert!(
        tokens.contains(
            &quote!(
                type Streams = ::eventcore::command::HNil;
            )
            .to_string()
        )
    );
    assert!(
        tokens.contains(
            &quote!(
                fn streams(&self) -> ::eventcore::Bindings<Self::Streams> {
                    ::eventcore::command::HNil
                }
            )
            .to_string()
        )
    );
}

#[test]
fn command_mistakes_are_all_reported_with_their_fix() {
    let input = syn::parse_quote! {
        #[command(state = S, colour = Red)]
        struct Bad {
            #[slot(FromAccount)] a: AccountId,
            #[slot(FromAccount)] b: AccountId,
            #[slot(ToAccount, Ledger)] c: AccountId,
            #[slot] d: AccountId,
            #[slot(Audit)] #[slot(Journal)] e: AccountId,
            #[key] k1: IdempotencyKey,
            #[key] k2: IdempotencyKey,
            #[key(x)] k3: IdempotencyKey,
        }
    };
    let errors = errors(command(input));
    let expected = [
        "unknown key `colour` in `#[command(..)]`",
        "is missing `error = Type`",
        "slot `FromAccount` is bound twice: fields `a` and `b`; a command holds each slot once",
        "`#[slot(..)]` names exactly one slot, e.g. `#[slot(FromAccount)]`; a field binds one slot",
        "`#[slot(..)]` names exactly one slot",
        "field `e` binds two slots, `Audit` and `Journal`; a field binds one slot",
        "two `#[key]` fields: `k1` and `k2`",
        "`#[key]` takes no arguments",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for part in expected {
        assert!(errors.iter().any(|e| e.contains(part)), "no `{part}` in {errors:#?}");
    }
}

/// A `#[key]` written twice on one field is said so, not as two key fields of one name.
#[test]
fn a_key_given_twice_on_one_field_is_named_as_such() {
    let errors = errors(command(syn::parse_quote! {
        #[command(state = S, error = E)]
        struct Pay {
            #[key]
            #[key]
            request: IdempotencyKey,
        }
    }));
    assert_eq!(errors, ["`#[key]` is given twice on `request`"]);
}

/// Two `#[slot(..)]` attributes on one field are refused as `#[slot(A, B)]` is, by both
/// paths (the fast one once bound both slots with the field).
#[test]
fn a_field_with_two_slot_attributes_is_refused() {
    let errors = errors(command(syn::parse_quote! {
        #[command(state = S, error = E)]
        struct Pay {
            #[slot(FromAccount)]
            #[slot(ToAccount)]
            account: AccountId,
        }
    }));
    assert_eq!(
        errors,
        [
            "field `account` binds two slots, `FromAccount` and `ToAccount`; a field binds one slot (give each slot its own field)"
        ]
    );
}

#[test]
fn a_command_needs_its_attribute_and_named_fields() {
    let missing = errors(command(syn::parse_quote!(
        struct C {
            #[slot(A)]
            a: Id,
        }
    )));
    assert_eq!(missing.len(), 1);
    assert!(missing[0].contains("needs `#[command(state = .., error = ..)]`"), "{missing:?}");
    let twice = errors(command(syn::parse_quote! {
        #[command(state = S, error = E, state = T)] struct C {}
    }));
    assert!(twice[0].contains("`state` is given twice"), "{twice:?}");
    let tuple = errors(command(syn::parse_quote!(
        #[command(state = S, error = E)]
        struct C(Id);
    )));
    assert!(tuple[0].contains("named fields"), "{tuple:?}");
    let en = errors(command(syn::parse_quote!(
        #[command(state = S, error = E)]
        enum C {
            A,
        }
    )));
    assert!(en[0].contains("named fields"), "{en:?}");
}

fn fold(input: DeriveInput) -> syn::Result<TokenStream> {
    let full = crate::fold::expand(&input);
    agrees(crate::fast::fold::<crate::fast::Fallback>(quote!(#input)), &full);
    full
}

#[test]
fn fold_expands_per_slot_for_fields_a_marker_for_the_type_and_maps_by_stream() {
    let input = syn::parse_quote! {
        #[fold(Audit)]
        struct State<T> where T: Clone {
            #[fold(FromAccount, ToAccount)] balance: Balance,
            #[fold(Products, by_stream)] stock: BTreeMap<StreamId, T>,
        }
    };
    let impl_for = |slot: TokenStream, stream: TokenStream, body: TokenStream| {
        quote! {
            impl<T> ::eventcore::Fold<#slot> for State<T> where T: Clone {
                fn fold(
                    &mut self,
                    #stream: &::eventcore::StreamId,
                    event: &<#slot as ::eventcore::Slot>::Event,
                ) {
                    #body
                }
            }
        }
    };
    // The state itself: the marker the library's blanket impl turns into the fold.
    let mut expected = quote! {
        impl<T> ::eventcore::__derive::FoldsWhole<Audit> for State<T> where T: Clone {}
    };
    for slot in [quote!(FromAccount), quote!(ToAccount)] {
        expected.extend(impl_for(
            slot.clone(),
            quote!(_stream),
            quote!(let this = self; ::eventcore::Apply::<<#slot as ::eventcore::Slot>::Event>::apply(&mut this.balance, event)),
        ));
    }
    expected.extend(impl_for(
        quote!(Products),
        quote!(stream),
        quote!(let this = self; ::eventcore::Apply::<<Products as ::eventcore::Slot>::Event>::apply(
            this.stock.entry(::core::clone::Clone::clone(stream)).or_default(),
            event,
        )),
    ));
    same(fold(input), expected);
}

#[test]
fn fold_on_a_tuple_struct_uses_the_field_index() {
    let tokens = fold(syn::parse_quote!(
        struct S(u8, #[fold(A)] Balance);
    ))
    .unwrap()
    .to_string();
    assert!(
        tokens.contains(
            &quote!(::eventcore::Apply::<<A as ::eventcore::Slot>::Event>::apply(
                &mut this.1,
                event
            ))
            .to_string()
        )
    );
}

#[test]
fn fold_mistakes_name_the_slot() {
    let errors = errors(fold(syn::parse_quote! {
        #[fold(A, by_stream)]
        struct S {
            #[fold(A)] a: X,
            #[fold(B, B)] b: X,
            #[fold] c: X,
        }
    }));
    let expected = [
        "`by_stream` applies to a field",
        "slot `A` is folded twice: by the state itself and by field `a`",
        "slot `B` is folded twice: by field `b` and by field `b`",
        "`#[fold(..)]` lists the slots to fold",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for part in expected {
        assert!(errors.iter().any(|e| e.contains(part)), "no `{part}` in {errors:#?}");
    }
    let none = errors_of_fold(syn::parse_quote!(
        struct S {
            a: X,
        }
    ));
    assert!(none[0].contains("found no slot to fold"), "{none:?}");
}

/// On an enum, `#[fold(..)]` folds into the state itself: one on a variant or a variant's field
/// would fold nothing, and the slot it names would not be folded.
#[test]
fn fold_attributes_inside_an_enum_are_refused() {
    let misplaced = errors_of_fold(syn::parse_quote! {
        #[fold(A)]
        enum State {
            #[fold(B)]
            Open,
            Closed { #[fold(C)] balance: Balance },
        }
    });
    assert_eq!(misplaced.len(), 2, "{misplaced:#?}");
    assert!(misplaced.iter().all(|e| e.contains("on an enum")), "{misplaced:#?}");
    // A union's fields are not folded one by one either: the marks would be ignored.
    let misplaced = errors_of_fold(syn::parse_quote! {
        #[fold(A)]
        union State {
            #[fold(B)]
            balance: u64,
        }
    });
    assert_eq!(misplaced.len(), 1, "{misplaced:#?}");
    assert!(misplaced[0].contains("on a union goes on the type"), "{misplaced:#?}");
}

fn errors_of_fold(input: DeriveInput) -> Vec<String> {
    errors(fold(input))
}

fn event(input: DeriveInput) -> syn::Result<TokenStream> {
    crate::event::expand(&input)
}

#[test]
fn event_expands_to_its_name_version_and_former_names() {
    let print = |input: &syn::DeriveInput| {
        syn::LitInt::new(
            &format!("{:#018x}u64", crate::event::fingerprint(input)),
            proc_macro2::Span::call_site(),
        )
    };
    let account: syn::DeriveInput = syn::parse_quote!(
        enum AccountEvent {
            Opened,
        }
    );
    let fingerprint = print(&account);
    same(
        event(account),
        quote! {
            impl ::eventcore::Event for AccountEvent {
                const EVENT_TYPE: &'static str = "AccountEvent";
                const FINGERPRINT: u64 = #fingerprint;
            }
        },
    );
    let generic: syn::DeriveInput = syn::parse_quote! {
        #[event(name = "account", version = 2u32)]
        #[event(former = ["AccountEvent", "Acct"])]
        struct E<T> { t: T }
    };
    let fingerprint = print(&generic);
    same(
        event(generic),
        quote! {
            impl<T> ::eventcore::Event for E<T> {
                const EVENT_TYPE: &'static str = "account";
                const FINGERPRINT: u64 = #fingerprint;
                const SCHEMA_VERSION: u32 = 2;
                const FORMER_TYPES: &'static [&'static str] = &["AccountEvent", "Acct"];
            }
        },
    );
}

#[test]
fn an_events_fingerprint_follows_its_definition_not_its_docs_or_layout() {
    let of = |input: syn::DeriveInput| crate::event::fingerprint(&input);
    let v1 = of(syn::parse_quote! {
        #[derive(Serialize)]
        enum AccountEvent { Opened { owner: String }, Closed }
    });
    // Docs, other attributes, the layout and the event's own `#[event(..)]` do not count.
    let same_shape = of(syn::parse_quote! {
        /// Docs.
        #[derive(Serialize, Deserialize)]
        #[event(version = 1)]
        enum AccountEvent {
            /// Opened.
            Opened {
                owner:   String,
            },
            Closed,
        }
    });
    assert_eq!(v1, same_shape);
    let changed = [
        // A new variant, the change that keeps old payloads readable.
        of(syn::parse_quote!(
            enum AccountEvent {
                Opened { owner: String },
                Frozen,
                Closed,
            }
        )),
        // A field's type, a field's name, the order of the variants.
        of(syn::parse_quote!(
            enum AccountEvent {
                Opened { owner: u64 },
                Closed,
            }
        )),
        of(syn::parse_quote!(
            enum AccountEvent {
                Opened { holder: String },
                Closed,
            }
        )),
        of(syn::parse_quote!(
            enum AccountEvent {
                Closed,
                Opened { owner: String },
            }
        )),
        // serde attributes change what is stored.
        of(syn::parse_quote! {
            #[serde(tag = "type")]
            enum AccountEvent { Opened { owner: String }, Closed }
        }),
        of(syn::parse_quote! {
            enum AccountEvent { Opened { #[serde(rename = "o")] owner: String }, Closed }
        }),
        of(syn::parse_quote!(
            enum AccountEvent {
                Opened { owner: String },
                Closed = 3,
            }
        )),
    ];
    for (i, other) in changed.iter().enumerate() {
        assert_ne!(v1, *other, "change {i} kept the fingerprint");
    }
}

#[test]
fn an_event_version_no_store_keeps_is_refused_at_the_version() {
    // Stores keep schema versions up to `i32::MAX` (PostgreSQL's `integer`) and refuse every
    // append of an event above it; one more is a `u32`, so it parsed, and the type could
    // never be stored.
    let errors = errors(event(syn::parse_quote! {
        #[event(version = 2147483648)]
        enum E { A }
    }));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("2147483647"), "{errors:#?}");
    let highest = event(syn::parse_quote! {
        #[event(version = 2147483647)]
        enum E { A }
    });
    assert!(highest.is_ok(), "{highest:?}");
}

#[test]
fn event_mistakes_are_reported() {
    let errors = errors(event(syn::parse_quote! {
        #[event(version = 0, colour = "red", name = "")]
        #[event(version = 5000000000, former = "Old")]
        enum E { A }
    }));
    let expected = [
        "schema versions start at 1",
        "unknown key `colour` in `#[event(..)]`",
        "an event type's `name` cannot be empty",
        "a `u32` from 1 up",
        "expected square brackets",
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for part in expected {
        assert!(errors.iter().any(|e| e.contains(part)), "no `{part}` in {errors:#?}");
    }
}

/// A former name that is empty, listed twice, or the type's own name is a mistake (it names
/// no old event, or repeats one), reported at the name rather than taken.
#[test]
fn former_names_that_name_no_old_event_are_refused() {
    let found = errors(event(syn::parse_quote! {
        #[event(name = "account", former = ["", "Acct", "Acct", "account"])]
        enum E { A }
    }));
    let expected = ["a former name cannot be empty", "`Acct` is listed twice", "type's own name"];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for part in expected {
        assert!(found.iter().any(|e| e.contains(part)), "no `{part}` in {found:#?}");
    }
    // Without `name`, the type's own name is its identifier.
    let found = errors(event(syn::parse_quote! {
        #[event(former = ["AccountEvent"])]
        enum AccountEvent { A }
    }));
    assert!(found.len() == 1 && found[0].contains("type's own name"), "{found:#?}");
}

/// `#[event(..)]` names the type; on a variant or a field it would name nothing, and the
/// events would be stored under the type's name, not the one written there.
#[test]
fn event_attributes_inside_the_type_are_refused() {
    let misplaced = errors(event(syn::parse_quote! {
        enum AccountEvent {
            #[event(name = "account.opened")]
            Opened,
            Closed { #[event(version = 2)] at: u64 },
        }
    }));
    assert_eq!(misplaced.len(), 2, "{misplaced:#?}");
    assert!(misplaced.iter().all(|e| e.contains("goes on the event type")), "{misplaced:#?}");
    let field = errors(event(syn::parse_quote! {
        struct Opened { #[event(name = "opened")] at: u64 }
    }));
    assert!(field[0].contains("goes on the event type"), "{field:?}");
}

fn stream_key(input: DeriveInput) -> syn::Result<TokenStream> {
    crate::stream_key::expand(&input)
}

#[test]
fn a_stream_key_wraps_its_stream_id() {
    let tokens = stream_key(syn::parse_quote! {
        #[stream_key(category = "account")]
        pub struct AccountId(StreamId);
    })
    .unwrap()
    .to_string();
    for part in [
        quote!(impl ::eventcore::StreamKey for AccountId {
            fn into_stream_id(self) -> ::eventcore::StreamId {
                <StreamId as ::eventcore::__derive::KeyStream>::into_stream(self.0)
            }
        }),
        quote!(
            pub const CATEGORY: &'static str = "account";
        ),
        quote!(match stream.strip_prefix("account-")),
        quote!(impl<'de> ::eventcore::__derive::serde::Deserialize<'de> for AccountId),
    ] {
        assert!(tokens.contains(&part.to_string()), "no `{part}` in {tokens}");
    }
}

#[test]
fn stream_key_mistakes_are_reported() {
    let missing = errors(stream_key(syn::parse_quote!(
        struct Id(StreamId);
    )));
    assert!(missing[0].contains("#[stream_key(category = \"account\")]"), "{missing:?}");
    let shape = errors(stream_key(syn::parse_quote!(
        #[stream_key(category = "a")]
        struct Id {
            s: StreamId,
        }
    )));
    assert!(shape[0].contains("tuple struct of one `StreamId`"), "{shape:?}");
    // What `StreamId::check_category` refuses, `try_new` would refuse for every id: a byte-order
    // mark or zero-width space pasted with the name, a bidirectional formatting character, a
    // category with no room for an id.
    let long = "c".repeat(254);
    for category in ["\u{feff}account", "account\u{200b}", "acc\u{200e}ount", long.as_str()] {
        let refused = errors(stream_key(syn::parse_quote! {
            #[stream_key(category = #category)]
            struct Id(StreamId);
        }));
        assert!(refused[0].contains("stream category"), "{category:?}: {refused:?}");
    }
    let bad = errors(stream_key(syn::parse_quote! {
        #[stream_key(category = "", kind = "x")]
        struct Id(StreamId);
    }));
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[0].contains("non-empty name without whitespace"), "{bad:?}");
    assert!(bad[1].contains("unknown key `kind`"), "{bad:?}");
}

fn continuation(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    crate::continuation::expand(args, item)
}

#[test]
fn a_continuation_after_a_command_takes_its_set_state_and_error() {
    same(
        continuation(
            quote!(command = CancelOrder, slot = Products, next = RevokePoints),
            quote! {
                impl Continuation for ReleaseStock {
                    fn resume(self, state: &OrderState, decision: Resuming<Self>) -> Resumed<Self> {
                        Ok(decision.done())
                    }
                }
            },
        ),
        quote! {
            impl Continuation for ReleaseStock {
                type Prior = <CancelOrder as ::eventcore::Command>::Streams;
                type Slot = Products;
                type State = <CancelOrder as ::eventcore::Command>::State;
                type Error = <CancelOrder as ::eventcore::Command>::Error;
                type Next = RevokePoints;
                fn resume(self, state: &OrderState, decision: Resuming<Self>) -> Resumed<Self> {
                    Ok(decision.done())
                }
            }
        },
    );
}

#[test]
fn a_later_round_extends_the_set_of_the_round_before() {
    same(
        continuation(
            quote!(after = ReleaseStock, slot = Customer),
            quote! {
                impl eventcore::Continuation for RevokePoints {
                    fn resume(self, _: &OrderState, decision: Resuming<Self>) -> Resumed<Self> {
                        Ok(decision)
                    }
                }
            },
        ),
        quote! {
            impl eventcore::Continuation for RevokePoints {
                type Prior = ::eventcore::Extended<
                    <ReleaseStock as ::eventcore::Continuation>::Prior,
                    <ReleaseStock as ::eventcore::Continuation>::Slot,
                >;
                type Slot = Customer;
                type State = <ReleaseStock as ::eventcore::Continuation>::State;
                type Error = <ReleaseStock as ::eventcore::Continuation>::Error;
                type Next = ::eventcore::NoDiscovery;
                fn resume(self, _: &OrderState, decision: Resuming<Self>) -> Resumed<Self> {
                    Ok(decision)
                }
            }
        },
    );
}

#[test]
fn continuation_mistakes_are_all_reported_with_their_fix() {
    let resume = quote! {
        impl Continuation for ReleaseStock {
            type State = OrderState;
            fn resume(self, _: &OrderState, d: Resuming<Self>) -> Resumed<Self> { Ok(d) }
        }
    };
    let all = errors(continuation(quote!(cmd = CancelOrder), resume));
    assert!(all.iter().any(|e| e.starts_with("unknown key `cmd`")), "{all:?}");
    assert!(all.iter().any(|e| e.contains("needs the step it continues")), "{all:?}");
    assert!(all.iter().any(|e| e.contains("needs `slot = Type`")), "{all:?}");
    assert!(all.iter().any(|e| e.starts_with("`type State` is written by")), "{all:?}");

    let both = errors(continuation(
        quote!(command = A, after = B, slot = S),
        quote!(impl Continuation for K { fn resume(self, _: &(), d: Resuming<Self>) -> Resumed<Self> { Ok(d) } }),
    ));
    assert!(both.iter().any(|e| e.contains("not both")), "{both:?}");

    let elsewhere = errors(continuation(
        quote!(command = A, slot = S),
        quote!(impl Handle for K { fn handle(&self) {} }),
    ));
    assert!(
        elsewhere[0].contains("goes on an `impl Continuation for YourType` block"),
        "{elsewhere:?}"
    );

    let not_an_impl = errors(continuation(
        quote!(command = A, slot = S),
        quote!(
            struct K;
        ),
    ));
    assert!(not_an_impl[0].contains("goes on an `impl Continuation"), "{not_an_impl:?}");
}

#[test]
fn a_continuation_keeps_its_header_and_body_as_written() {
    // Generics, a where clause and attributes pass through; the body is not re-parsed, so a
    // `type` inside a method (a local item) is not taken for one of the written types.
    same(
        continuation(
            quote!(command = Tally<T>, slot = Account),
            quote! {
                #[allow(unused)]
                impl<T: Send> Continuation for Release<T> where T: Sync {
                    fn resume(self, _: &History<T>, d: Resuming<Self>) -> Resumed<Self> {
                        type State = u8;
                        Ok(d)
                    }
                }
            },
        ),
        quote! {
            #[allow(unused)]
            impl<T: Send> Continuation for Release<T> where T: Sync {
                type Prior = <Tally<T> as ::eventcore::Command>::Streams;
                type Slot = Account;
                type State = <Tally<T> as ::eventcore::Command>::State;
                type Error = <Tally<T> as ::eventcore::Command>::Error;
                type Next = ::eventcore::NoDiscovery;
                fn resume(self, _: &History<T>, d: Resuming<Self>) -> Resumed<Self> {
                    type State = u8;
                    Ok(d)
                }
            }
        },
    );

    let inherent =
        errors(continuation(quote!(command = A, slot = S), quote!(impl K { fn resume(self) {} })));
    assert!(inherent[0].contains("goes on an `impl Continuation"), "{inherent:?}");
}

#[test]
fn the_fast_path_takes_the_book_form_and_writes_what_the_full_path_writes() {
    let transfer: DeriveInput = syn::parse_quote! {
        /// A transfer.
        #[command(state = bank::TransferState, error = BankError<Money>,)]
        #[derive(Debug)]
        pub struct Transfer {
            #[slot(FromAccount)] pub from: AccountId,
            /// Where it goes.
            #[slot(ToAccount)] pub(crate) to: ::bank::AccountId,
            note: fn(u8) -> Vec<(u8, [u8; 2])>,
            #[slot(Ledger)] id: Id<Vec<u8>, u8>,
            #[key] key: Option<IdempotencyKey>,
        }
    };
    let fast = crate::fast::command::<crate::fast::Fallback>(quote!(#transfer))
        .expect("the fast path takes the book form");
    let full = crate::command::expand(&transfer).unwrap();
    assert_eq!(trees(fast), trees(full));
    // Without slots, without a key, with a continuation, in another order.
    let bare: DeriveInput = syn::parse_quote! {
        #[command(error = E, continuation = More)]
        #[command(state = S)]
        struct Ping { at: u64 }
    };
    let fast = crate::fast::command::<crate::fast::Fallback>(quote!(#bare))
        .expect("the fast path takes a command without slots");
    assert_eq!(trees(fast), trees(crate::command::expand(&bare).unwrap()));

    let state: DeriveInput = syn::parse_quote! {
        #[derive(Debug, Default)]
        #[fold(FromAccount, ToAccount,)]
        #[fold(Ledger)]
        pub struct TransferState { #[serde(default)] pub from: u64, to: u64 }
    };
    let fast = crate::fast::fold::<crate::fast::Fallback>(quote!(#state))
        .expect("the fast path takes a state folding itself");
    assert_eq!(trees(fast), trees(crate::fold::expand(&state).unwrap()));
    let unit: DeriveInput = syn::parse_quote!(
        #[fold(A)]
        struct Seen;
    );
    assert!(crate::fast::fold::<crate::fast::Fallback>(quote!(#unit)).is_some());
}

#[test]
fn the_fast_path_leaves_everything_else_to_the_full_path() {
    let commands = [
        quote!(
            #[command(state = S, error = E)]
            struct C<T> {
                #[slot(A)]
                a: T,
            }
        ),
        quote!(
            #[command(state = S, error = E)]
            struct C
            where
                u8: Copy,
            {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = S, error = E)]
            struct C(X);
        ),
        quote!(
            #[command(state = S, error = E)]
            enum C {
                A,
            }
        ),
        quote!(
            #[command(state = (), error = E)]
            struct C {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = &'static S, error = E)]
            struct C {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = S)]
            struct C {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = S, error = E, state = S)]
            struct C {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = S, error = E, other = X)]
            struct C {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = A B, error = E)]
            struct C {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = S<A B>, error = E)]
            struct C {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = S<>, error = E)]
            struct C {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command]
            struct C {
                #[slot(A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = S, error = E)]
            struct C {
                #[slot(A)]
                a: X,
                #[slot(A)]
                b: X,
            }
        ),
        quote!(
            #[command(state = S, error = E)]
            struct C {
                #[slot(a::A)]
                a: X,
            }
        ),
        quote!(
            #[command(state = S, error = E)]
            struct C {
                #[slot(A, B)]
                a: X,
            }
        ),
        quote!(
            #[command(state = S, error = E)]
            struct C {
                #[slot]
                a: X,
            }
        ),
        quote!(
            #[command(state = S, error = E)]
            struct C {
                #[slot(A)]
                a: (X, Y),
            }
        ),
        quote!(
            #[command(state = S, error = E)]
            struct C {
                #[key]
                a: K,
                #[key]
                b: K,
            }
        ),
        quote!(
            #[command(state = S, error = E)]
            struct C {
                #[key(x)]
                a: K,
            }
        ),
    ];
    for input in commands {
        assert!(
            crate::fast::command::<crate::fast::Fallback>(input.clone()).is_none(),
            "took {input}"
        );
    }
    // An attribute passed on by a `macro_rules!` as a fragment arrives in an invisible group:
    // it may be a slot, so the full path reads it.
    let hidden = |attr: TokenStream| {
        let group = proc_macro2::Group::new(proc_macro2::Delimiter::None, attr);
        quote!(#[command(state = S, error = E)] struct C { #[#group] a: X })
    };
    assert!(crate::fast::command::<crate::fast::Fallback>(hidden(quote!(slot(A)))).is_none());
    assert!(
        crate::fast::fold::<crate::fast::Fallback>(quote!(
            #[fold(A)]
            struct S {
                a: X,
            }
        ))
        .is_some()
    );
    let folded = proc_macro2::Group::new(proc_macro2::Delimiter::None, quote!(fold(A)));
    assert!(
        crate::fast::fold::<crate::fast::Fallback>(quote!(#[#folded] struct S { a: X })).is_none()
    );
    let field = quote!(#[fold(A)] struct S { #[#folded] a: X });
    assert!(crate::fast::fold::<crate::fast::Fallback>(field).is_none());
    let many = slots_command(17);
    assert!(
        crate::fast::command::<crate::fast::Fallback>(quote!(#many)).is_none(),
        "took 17 slots"
    );
    let states = [
        quote!(
            #[fold(A)]
            struct S<T> {
                a: T,
            }
        ),
        quote!(
            #[fold(A)]
            enum S {
                X,
            }
        ),
        quote!(
            #[fold(A, by_stream)]
            struct S {
                a: X,
            }
        ),
        quote!(
            #[fold(A, A)]
            struct S {
                a: X,
            }
        ),
        quote!(
            #[fold(a::A)]
            struct S {
                a: X,
            }
        ),
        quote!(
            #[fold()]
            struct S {
                a: X,
            }
        ),
        quote!(
            #[fold(A)]
            struct S {
                #[fold(B)]
                b: X,
            }
        ),
        quote!(
            #[fold(A)]
            struct S(#[fold(B)] X);
        ),
        quote!(
            struct S {
                a: X,
            }
        ),
    ];
    for input in states {
        assert!(
            crate::fast::fold::<crate::fast::Fallback>(input.clone()).is_none(),
            "took {input}"
        );
    }
}

#[test]
fn a_plain_type_is_a_path_with_generic_arguments() {
    // Written as text: rustfmt would rewrite some of these inside `quote!`.
    let plain = |text: &str| {
        let tokens: TokenStream = text.parse().unwrap();
        crate::fast::plain_type::<crate::fast::Fallback>(&tokens.into_iter().collect::<Vec<_>>())
    };
    for ok in ["A", "::a::B", "a::B<C, d::E<F>,>", "Vec<Vec<u8>>", "Self"] {
        assert!(plain(ok), "{ok}");
    }
    for not in [
        "",
        "A B",
        "A<>",
        "A<B",
        "A::",
        "&A",
        "A::<B>",
        "(A)",
        "A<B>>",
        "[A; 2]",
        "a:B",
        "A<B C>",
        "A<B C, D>",
    ] {
        assert!(!plain(not), "{not}");
    }
}

#[test]
fn an_events_fingerprint_tells_apart_serde_names_that_differ_in_spaces_alone() {
    // A serde name is stored as written: "Order Placed" and "OrderPlaced" are two shapes,
    // and code that reads one cannot read the other's payloads.
    let of = |input: syn::DeriveInput| crate::event::fingerprint(&input);
    let spaced = of(syn::parse_quote! {
        enum OrderEvent { #[serde(rename = "Order Placed")] Placed, Shipped }
    });
    let joined = of(syn::parse_quote! {
        enum OrderEvent { #[serde(rename = "OrderPlaced")] Placed, Shipped }
    });
    assert_ne!(spaced, joined, "two serde names kept one fingerprint");
    let tagged = |tag: &str| {
        let tag = syn::LitStr::new(tag, proc_macro2::Span::call_site());
        of(syn::parse_quote! {
            #[serde(tag = #tag)]
            enum OrderEvent { Placed, Shipped }
        })
    };
    assert_ne!(tagged("event type"), tagged("eventtype"), "two tags kept one fingerprint");
}

#[test]
fn an_events_fingerprint_counts_serde_attributes_under_cfg_attr() {
    // `#[cfg_attr(feature = "..", serde(..))]` changes what is stored as `#[serde(..)]` does.
    let of = |input: syn::DeriveInput| crate::event::fingerprint(&input);
    let plain = of(syn::parse_quote! {
        enum OrderEvent { Placed { total: u64 }, Shipped }
    });
    let renamed = of(syn::parse_quote! {
        enum OrderEvent { Placed { #[cfg_attr(all(), serde(rename = "sum"))] total: u64 }, Shipped }
    });
    assert_ne!(plain, renamed, "a serde rename under cfg_attr kept the fingerprint");
}
