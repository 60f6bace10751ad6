//! The OpenAPI importer on small hand-written descriptions (tests/fixtures/openapi/).

// In a module, so that `cargo test openapi` selects every test here.
mod openapi {
    use airlock_declarative::format::{ActionDef, BodyDef, BodyEncoding, Definition, Method};
    use airlock_declarative::openapi::{
        Import, ImportError, ImportOptions, MAX_ACTION_SCHEMA_BYTES, MAX_DESCRIPTION_CHARS, import,
    };
    use airlock_declarative::template::UrlTemplate;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn petstore() -> Value {
        serde_json::from_str(include_str!("fixtures/openapi/petstore-3.0.json")).expect("JSON")
    }

    fn widgets() -> Value {
        serde_json::from_str(include_str!("fixtures/openapi/widgets-3.1.json")).expect("JSON")
    }

    fn options() -> ImportOptions {
        ImportOptions::new("petstore", "1.0.0")
    }

    fn action<'i>(imported: &'i Import, name: &str) -> &'i ActionDef {
        imported
            .definition
            .actions
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| {
                let names: Vec<&str> = imported
                    .definition
                    .actions
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect();
                panic!("no action `{name}` among {names:?}")
            })
    }

    fn skipped_reason<'i>(imported: &'i Import, operation: &str) -> &'i str {
        imported
            .skipped
            .iter()
            .find(|s| s.operation == operation)
            .map(|s| s.reason.as_str())
            .unwrap_or_else(|| panic!("`{operation}` was not skipped: {:?}", imported.skipped))
    }

    #[test]
    fn a_non_json_success_sets_the_accept_header() {
        let spec = doc(
            json!({
                "/markdown": {"post": {"operationId": "render",
                    "responses": {"200": {"description": "html",
                        "content": {"text/html": {"schema": {"type": "string"}}}}}}},
                "/thing": {"get": {"operationId": "thing",
                    "responses": {"200": {"description": "json",
                        "content": {"application/json": {"schema": {"type": "object"}}}}}}}
            }),
            json!({}),
        );
        let imported = import(&spec, &options()).expect("imports");
        assert_eq!(
            action(&imported, "render")
                .headers
                .get("Accept")
                .map(String::as_str),
            Some("text/html")
        );
        assert!(action(&imported, "thing").headers.is_empty());
    }

    fn has_note(imported: &Import, needle: &str) -> bool {
        imported.notes.iter().any(|n| n.contains(needle))
    }

    /// A minimal document around `paths` and `components`.
    fn doc(paths: Value, components: Value) -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "T", "version": "1"},
            "servers": [{"url": "https://api.example.test"}],
            "paths": paths,
            "components": components
        })
    }

    // ---------------------------------------------------------------------------------------
    // A structural check of JSON Schema 2020-12, written apart from the importer: every keyword
    // the importer may emit has a value of the shape the meta-schema wants, subschemas are
    // checked recursively, and no `$ref` is left.

    const ONE: [&str; 11] = [
        "additionalProperties",
        "items",
        "contains",
        "not",
        "if",
        "then",
        "else",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    ];
    const TYPES: [&str; 7] = [
        "array", "boolean", "integer", "null", "number", "object", "string",
    ];

    fn check_schema(schema: &Value, at: &str) {
        let map = match schema {
            Value::Bool(_) => return,
            Value::Object(map) => map,
            other => panic!("{at}: a schema is an object or a boolean, not {other}"),
        };
        for (key, value) in map {
            let here = format!("{at}/{key}");
            match key.as_str() {
                k if ONE.contains(&k) => check_schema(value, &here),
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    let list = value
                        .as_array()
                        .unwrap_or_else(|| panic!("{here}: not a list"));
                    assert!(!list.is_empty(), "{here}: empty");
                    for (i, sub) in list.iter().enumerate() {
                        check_schema(sub, &format!("{here}/{i}"));
                    }
                }
                "properties" | "patternProperties" | "dependentSchemas" => {
                    for (name, sub) in value
                        .as_object()
                        .unwrap_or_else(|| panic!("{here}: not an object"))
                    {
                        check_schema(sub, &format!("{here}/{name}"));
                    }
                }
                "type" => match value {
                    Value::String(t) => assert!(TYPES.contains(&t.as_str()), "{here}: {t}"),
                    Value::Array(list) => {
                        assert!(!list.is_empty(), "{here}: empty");
                        let mut seen = Vec::new();
                        for t in list {
                            let t = t.as_str().unwrap_or_else(|| panic!("{here}: {t}"));
                            assert!(TYPES.contains(&t) && !seen.contains(&t), "{here}: {t}");
                            seen.push(t);
                        }
                    }
                    other => panic!("{here}: {other}"),
                },
                "enum" | "examples" => assert!(value.is_array(), "{here}"),
                "const" | "default" => {}
                "multipleOf" => assert!(value.as_f64().is_some_and(|n| n > 0.0), "{here}"),
                "maximum" | "minimum" | "exclusiveMaximum" | "exclusiveMinimum" => {
                    assert!(value.is_number(), "{here}: {value}")
                }
                "maxLength" | "minLength" | "maxItems" | "minItems" | "maxContains"
                | "minContains" | "maxProperties" | "minProperties" => {
                    assert!(value.as_u64().is_some(), "{here}")
                }
                "pattern" | "format" | "title" | "description" | "contentEncoding"
                | "contentMediaType" | "$comment" => assert!(value.is_string(), "{here}"),
                "uniqueItems" | "deprecated" | "readOnly" | "writeOnly" => {
                    assert!(value.is_boolean(), "{here}")
                }
                "required" => {
                    let list = value
                        .as_array()
                        .unwrap_or_else(|| panic!("{here}: not a list"));
                    let mut seen = Vec::new();
                    for name in list {
                        let name = name.as_str().unwrap_or_else(|| panic!("{here}: {name}"));
                        assert!(!seen.contains(&name), "{here}: `{name}` twice");
                        seen.push(name);
                    }
                }
                "dependentRequired" => {
                    for list in value
                        .as_object()
                        .unwrap_or_else(|| panic!("{here}"))
                        .values()
                    {
                        assert!(
                            list.as_array()
                                .is_some_and(|l| l.iter().all(Value::is_string)),
                            "{here}"
                        );
                    }
                }
                other => panic!("{here}: the keyword `{other}` is not one the importer emits"),
            }
        }
    }

    /// Everything an imported definition promises, whatever the document was.
    fn check_definition(definition: &Definition) {
        let text = serde_json::to_string(definition).expect("serializes");
        let back: Definition = serde_json::from_str(&text).expect("parses back");
        assert_eq!(&back, definition);
        assert!(!definition.actions.is_empty());
        let mut names = std::collections::BTreeSet::new();
        for action in &definition.actions {
            let name = &action.name;
            assert!(
                (1..=64).contains(&name.len())
                    && name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'_'
                        || b == b'-'),
                "`{name}` breaks the manifest's name rule"
            );
            assert!(names.insert(name.clone()), "`{name}` twice");
            let template =
                UrlTemplate::parse(&action.endpoint).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(template.is_relative_path(), "{name}: {}", action.endpoint);
            assert!(
                action.endpoint.starts_with('/'),
                "{name}: {}",
                action.endpoint
            );
            let mut size = 0;
            for (which, schema) in [
                ("path_schema", &action.path_schema),
                ("query_schema", &action.query_schema),
                ("headers_schema", &action.headers_schema),
                ("body_schema", &action.body_schema),
                ("output_schema", &action.output_schema),
            ] {
                if let Some(schema) = schema {
                    check_schema(schema, &format!("{name}.{which}"));
                    size += serde_json::to_string(schema).expect("serializes").len();
                }
            }
            assert!(
                size <= MAX_ACTION_SCHEMA_BYTES,
                "{name}: {size} bytes of schemas"
            );
            for group in [
                &action.path_schema,
                &action.query_schema,
                &action.headers_schema,
            ]
            .into_iter()
            .flatten()
            {
                assert_eq!(group["type"], "object");
                assert_eq!(group["additionalProperties"], false);
            }
        }
    }

    // ---------------------------------------------------------------------------------------

    #[test]
    fn imports_the_petstore() {
        let imported = import(&petstore(), &options()).expect("imports");
        check_definition(&imported.definition);
        let definition = &imported.definition;
        assert_eq!(definition.name, "petstore");
        assert_eq!(definition.version, "1.0.0");
        assert_eq!(definition.description, "Pet Store");
        assert_eq!(definition.base_url, "https://api.petstore.test/v1");
        assert_eq!(definition.config_schema, None);
        assert_eq!(imported.total_operations, 13);
        assert_eq!(imported.selected_operations, 13);
        assert_eq!(imported.converted() + imported.skipped.len(), 13);
        let names: Vec<&str> = definition.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "escapes",
                "post_login",
                "owners_list_pets",
                "list_pets",
                "create_pet",
                "show_pet_by_id",
                "delete_pet",
                "update_pet",
                "put_notes",
                "get_tree",
                "list_pets_2",
            ]
        );
    }

    #[test]
    fn params_in_path_query_and_header() {
        let imported = import(&petstore(), &options()).expect("imports");
        let list = action(&imported, "list_pets");
        assert_eq!(list.method, Method::Get);
        assert_eq!(list.description, "List all pets");
        // `tags` is an exploded array, `ids` is not; `filter` (deepObject) and `page[size]` (not a
        // variable name) are optional, so dropped.
        assert_eq!(list.endpoint, "/pets{?limit,tags*,ids}");
        let query = list.query_schema.as_ref().expect("query schema");
        assert_eq!(query["required"], json!(["limit"]));
        assert_eq!(
            query["properties"]["tags"],
            json!({"type": "array", "items": {"type": "string"}})
        );
        // 3.0's boolean `exclusiveMinimum` takes its numeric form.
        assert_eq!(
            query["properties"]["limit"],
            json!({"type": "integer", "maximum": 100, "exclusiveMinimum": 0})
        );
        assert!(query["properties"].get("filter").is_none());
        assert!(has_note(
            &imported,
            "`filter` is dropped: it has the `deepObject` style"
        ));
        assert!(has_note(&imported, "`page[size]` is dropped"));
        // Header: `X-Request-ID` only; `Accept` silently, `X-API-Key` (the auth's) and `Host`
        // with a note; the optional cookie is dropped.
        assert_eq!(list.headers.len(), 1);
        assert_eq!(list.headers["X-Request-ID"], "{x_request_id}");
        let headers = list.headers_schema.as_ref().expect("headers schema");
        assert_eq!(
            headers,
            &json!({
                "type": "object",
                "properties": {"x_request_id": {"type": "string", "format": "uuid", "description": "Correlates logs"}},
                "required": ["x_request_id"],
                "additionalProperties": false
            })
        );
        assert!(has_note(&imported, "`X-API-Key` is the auth's: dropped"));
        assert!(has_note(&imported, "`Host` is the transport's: dropped"));
        assert!(!has_note(&imported, "`Accept`"));
        assert!(has_note(
            &imported,
            "the cookie parameter `session` is dropped"
        ));
        assert!(list.path_schema.is_none());

        // Path-level parameters, overridden by the operation's.
        let show = action(&imported, "show_pet_by_id");
        assert_eq!(show.endpoint, "/pets/{petId}");
        let path = show.path_schema.as_ref().expect("path schema");
        assert_eq!(
            path["properties"]["petId"],
            json!({"type": "string", "description": "The pet's id"})
        );
        assert_eq!(path["required"], json!(["petId"]));
        let delete = action(&imported, "delete_pet");
        let path = delete.path_schema.as_ref().expect("path schema");
        assert_eq!(
            path["properties"]["petId"],
            json!({"type": "integer", "format": "int64", "description": "Overrides the path item's"})
        );
        // A description without a summary is cut.
        assert_eq!(show.description.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(
            show.description
                .starts_with("Returns the pet with this id.")
                && show.description.ends_with('…')
        );

        // A path parameter whose name is not a variable is renamed, away from the names taken.
        let owners = action(&imported, "owners_list_pets");
        assert_eq!(owners.endpoint, "/owners/{owner_name_2}/pets/{owner_name}");
        let path = owners.path_schema.as_ref().expect("path schema");
        assert_eq!(path["required"], json!(["owner_name_2", "owner_name"]));
        assert_eq!(imported.renamed.len(), 1);
        let renamed = &imported.renamed[0];
        assert_eq!(
            (
                renamed.action.as_str(),
                renamed.location.as_str(),
                renamed.parameter.as_str(),
                renamed.variable.as_str()
            ),
            ("owners_list_pets", "path", "owner.name", "owner_name_2")
        );

        // A required cookie skips its operation.
        assert!(
            skipped_reason(&imported, "needsCookie")
                .contains("the required cookie parameter `csrf`")
        );
    }

    #[test]
    fn resolves_references_and_cuts_recursion() {
        let imported = import(&petstore(), &options()).expect("imports");
        let show = action(&imported, "show_pet_by_id");
        let pet = show.output_schema.as_ref().expect("output schema");
        // No OpenAPI-only keyword survives.
        for gone in [
            "discriminator",
            "xml",
            "externalDocs",
            "x-internal",
            "example",
        ] {
            assert!(pet.get(gone).is_none(), "{gone}");
        }
        assert_eq!(pet["properties"]["name"], json!({"type": "string"}));
        assert_eq!(
            pet["properties"]["id"],
            json!({"type": "integer", "format": "int64", "readOnly": true})
        );
        // Pet -> Owner -> Pet: the recursion point is `{}`, whatever was converted before.
        assert_eq!(
            pet["properties"]["owner"]["anyOf"][0]["allOf"][0]["properties"]["pets"]["items"],
            json!({})
        );
        assert!(has_note(
            &imported,
            "the recursive schema `#/components/schemas/Pet` is cut"
        ));
        // Node -> Node.
        let tree = action(&imported, "get_tree")
            .output_schema
            .as_ref()
            .expect("output");
        assert_eq!(
            tree["properties"]["children"],
            json!({"type": "array", "items": {}})
        );
        assert!(has_note(
            &imported,
            "`getTree`: the recursive schema `#/components/schemas/Node` is cut"
        ));
        // JSON Pointer and percent escapes.
        assert_eq!(
            action(&imported, "list_pets_2").output_schema,
            Some(json!({"type": "string", "title": "slash"}))
        );
        assert_eq!(
            action(&imported, "escapes").output_schema,
            Some(json!({"type": "boolean", "title": "space"}))
        );
        // Responses by reference, `$ref` strings nowhere.
        let text = serde_json::to_string(&imported.definition).expect("serializes");
        assert!(!text.contains("$ref"));
        assert!(!text.contains("#/components"));
    }

    #[test]
    fn converts_nullable() {
        let imported = import(&petstore(), &options()).expect("imports");
        let pet = action(&imported, "show_pet_by_id")
            .output_schema
            .clone()
            .expect("output");
        let properties = &pet["properties"];
        assert_eq!(properties["tag"], json!({"type": ["string", "null"]}));
        assert_eq!(
            properties["status"],
            json!({"type": ["string", "null"], "enum": ["available", "sold", null]})
        );
        // No `type` of its own (an `allOf`): wrapped.
        assert_eq!(properties["owner"]["anyOf"][1], json!({"type": "null"}));
        assert!(properties["owner"]["anyOf"][0]["allOf"][0]["properties"]["name"].is_object());
        // 3.0 ignores a `$ref`'s siblings but `nullable` (and annotations).
        assert_eq!(properties["vet"]["type"], json!(["object", "null"]));
        assert_eq!(properties["vet"]["description"], "The vet");
        assert_eq!(
            properties["weight"],
            json!({"type": "number", "exclusiveMaximum": 200})
        );
        assert_eq!(properties["age"], json!({"type": "integer", "minimum": 0}));
    }

    #[test]
    fn json_and_form_request_bodies() {
        let imported = import(&petstore(), &options()).expect("imports");
        let create = action(&imported, "create_pet");
        assert_eq!(create.method, Method::Post);
        assert_eq!(
            create.body, None,
            "JSON is the default without a body definition"
        );
        assert_eq!(
            create.body_schema,
            Some(
                json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "tag": {"type": "string"}}})
            )
        );
        assert_eq!(
            create.output_schema.as_ref().expect("output")["properties"]["name"],
            json!({"type": "string"})
        );

        let login = action(&imported, "post_login");
        assert_eq!(login.description, "Log in");
        assert_eq!(
            login.body,
            Some(BodyDef {
                encoding: BodyEncoding::Form,
                template: None
            })
        );
        assert_eq!(
            login.body_schema.as_ref().expect("body schema")["required"],
            json!(["user", "password"])
        );

        // `+json` is JSON; a 204 beside the 200 makes the output nullable.
        let update = action(&imported, "update_pet");
        assert!(update.body_schema.is_some());
        assert!(has_note(
            &imported,
            "`updatePet`: its `application/merge-patch+json` body is sent as `application/json`"
        ));
        assert_eq!(
            update.output_schema.as_ref().expect("output")["type"],
            json!(["object", "null"])
        );
        // 204 only: anything.
        assert_eq!(
            action(&imported, "delete_pet").output_schema,
            Some(json!({}))
        );
    }

    #[test]
    fn unsupported_content_is_skipped_with_a_reason() {
        let imported = import(&petstore(), &options()).expect("imports");
        let reason = skipped_reason(&imported, "uploadPhoto");
        assert!(reason.contains("`multipart/form-data`"), "{reason}");
        assert!(reason.contains("only JSON and form bodies"), "{reason}");
        // Optional: imported without a body.
        let notes = action(&imported, "put_notes");
        assert_eq!(notes.body_schema, None);
        assert!(has_note(
            &imported,
            "`putNotes`: its optional request body (`application/octet-stream`) is left out"
        ));

        // A parameter whose `content` is not JSON skips its operation; a JSON one is its schema.
        let widgets = import(&widgets(), &ImportOptions::new("widgets", "1.0.0")).expect("imports");
        assert!(skipped_reason(&widgets, "searchWidgets").contains("`text/plain` content"));
        let get = action(&widgets, "get_widget");
        assert_eq!(get.endpoint, "/widgets/{id}{?fields}");
        assert_eq!(
            get.query_schema.as_ref().expect("query")["properties"]["fields"],
            json!({"type": "string"})
        );
    }

    #[test]
    fn imports_openapi_3_1() {
        let imported =
            import(&widgets(), &ImportOptions::new("widgets", "1.0.0")).expect("imports");
        check_definition(&imported.definition);
        let definition = &imported.definition;
        // Host variables are the config's (a DNS label each); the port and path take defaults.
        assert_eq!(
            definition.base_url,
            "https://{config.tenant}.{config.region}.widgets.test:443/api/v2"
        );
        assert_eq!(
            definition.config_schema,
            Some(json!({
                "type": "object",
                "properties": {
                    "region": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", "enum": ["eu", "us"], "default": "eu"},
                    "tenant": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", "default": "acme", "description": "Your tenant"}
                },
                "additionalProperties": false
            }))
        );
        // `info.version` is not semver and no version was given... here one was.
        assert_eq!(definition.version, "1.0.0");
        let get = action(&imported, "get_widget");
        assert_eq!(
            get.path_schema.as_ref().expect("path")["properties"]["id"],
            json!({"type": ["string", "integer"]})
        );
        let widget = get.output_schema.as_ref().expect("output from 2XX");
        assert!(widget.get("$id").is_none() && widget.get("$schema").is_none());
        let properties = &widget["properties"];
        assert_eq!(
            properties["name"],
            json!({"type": "string", "examples": ["gear"]})
        );
        assert_eq!(
            properties["color"],
            json!({"type": ["string", "null"], "enum": ["red", "blue", null]})
        );
        assert_eq!(
            properties["size"],
            json!({"type": "number", "exclusiveMinimum": 0})
        );
        assert_eq!(
            properties["parts"],
            json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false})
        );
        assert_eq!(
            properties["meta"],
            json!({"type": "object", "additionalProperties": {"type": "string"}})
        );
        assert_eq!(
            properties["example"],
            json!({"type": "string"}),
            "a property named `example` stays"
        );
        // 3.1 keeps a `$ref`'s siblings: annotations merged, constraints beside it in an `allOf`.
        let create = action(&imported, "create_widget");
        let body = create.body_schema.as_ref().expect("body");
        assert_eq!(body["required"], json!(["name"]));
        assert_eq!(body["description"], "The new widget");
        assert_eq!(
            body["allOf"][0]["properties"]["size"],
            json!({"type": "number", "exclusiveMinimum": 0})
        );
        let output = create.output_schema.as_ref().expect("output");
        assert_eq!(output["description"], "The widget");
        assert_eq!(output["type"], "object");
        // A non-JSON response: anything.
        let imported = import(
            &widgets(),
            &ImportOptions {
                select: vec!["searchWidgets".into(), "getWidget".into()],
                ..ImportOptions::new("w", "1.0.0")
            },
        )
        .expect("imports");
        assert_eq!(imported.converted(), 1);
    }

    #[test]
    fn the_version_and_name_default_from_info() {
        let mut options = ImportOptions::default();
        let imported = import(&petstore(), &options).expect("imports");
        assert_eq!(
            (
                imported.definition.name.as_str(),
                imported.definition.version.as_str()
            ),
            ("pet_store", "1.2.3")
        );
        let imported = import(&widgets(), &options).expect("imports");
        assert_eq!(
            (
                imported.definition.name.as_str(),
                imported.definition.version.as_str()
            ),
            ("widgets_api", "0.1.0")
        );
        options.name = "Bad Name".into();
        assert!(matches!(
            import(&petstore(), &options),
            Err(ImportError::Options(_))
        ));
        options.name = "ok".into();
        options.version = "1.0".into();
        assert!(matches!(
            import(&petstore(), &options),
            Err(ImportError::Options(_))
        ));
    }

    // ---------------------------------------------------------------------------------------
    // Security

    fn with_security(scheme: Value, requirement: Value) -> Value {
        let mut spec = doc(
            json!({"/a": {"get": {"operationId": "a", "parameters": [
            {"name": "key", "in": "query", "schema": {"type": "string"}},
            {"name": "X-Token", "in": "header", "schema": {"type": "string"}}
        ], "responses": {"200": {"description": "ok"}}}}}),
            json!({"securitySchemes": {"s": scheme}}),
        );
        spec["security"] = json!([{"s": requirement}]);
        spec
    }

    fn auth_of(scheme: Value) -> Import {
        import(&with_security(scheme, json!([])), &options()).expect("imports")
    }

    #[test]
    fn maps_security_schemes() {
        let header = auth_of(json!({"type": "apiKey", "in": "header", "name": "X-Token"}));
        assert_eq!(
            header.definition.auth,
            json!({"type": "api_key", "in": "header", "name": "X-Token"})
        );
        // The auth's header is the host's: the parameter is dropped.
        assert!(action(&header, "a").headers.is_empty());

        let query = auth_of(json!({"type": "apiKey", "in": "query", "name": "key"}));
        assert_eq!(
            query.definition.auth,
            json!({"type": "api_key", "in": "query", "name": "key"})
        );
        assert_eq!(
            action(&query, "a").endpoint,
            "/a",
            "the auth's query parameter is dropped"
        );

        let bearer = auth_of(json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}));
        assert_eq!(
            bearer.definition.auth,
            json!({"type": "api_key", "in": "header", "name": "Authorization", "prefix": "Bearer "})
        );
        assert_eq!(
            auth_of(json!({"type": "http", "scheme": "Basic"}))
                .definition
                .auth,
            json!({"type": "basic"})
        );

        let oauth = import(
            &with_security(
                json!({"type": "oauth2", "flows": {
                    "clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {"a": "", "b": ""}},
                    "implicit": {"authorizationUrl": "https://x.test/auth", "scopes": {}}
                }}),
                json!(["b", "a"]),
            ),
            &options(),
        )
        .expect("imports");
        assert_eq!(
            oauth.definition.auth,
            json!({"type": "oauth2", "token_url": "https://api.example.test/oauth/token", "scopes": ["a", "b"]})
        );

        let oidc = auth_of(
            json!({"type": "openIdConnect", "openIdConnectUrl": "https://x.test/.well-known"}),
        );
        assert_eq!(oidc.definition.auth, json!({"type": "none"}));
        assert!(has_note(&oidc, "`openIdConnect` has no manifest auth"));
        let digest = auth_of(json!({"type": "http", "scheme": "digest"}));
        assert_eq!(digest.definition.auth, json!({"type": "none"}));

        // Several apiKey headers together: custom_header.
        let mut spec = with_security(
            json!({"type": "apiKey", "in": "header", "name": "X-Id"}),
            json!([]),
        );
        spec["components"]["securitySchemes"]["t"] =
            json!({"type": "apiKey", "in": "header", "name": "X-Secret"});
        spec["security"] = json!([{"s": [], "t": []}]);
        let both = import(&spec, &options()).expect("imports");
        assert_eq!(
            both.definition.auth,
            json!({"type": "custom_header", "headers": ["X-Id", "X-Secret"]})
        );

        // The option wins.
        let manual = ImportOptions {
            auth: Some(json!({"type": "basic"})),
            ..options()
        };
        assert_eq!(
            import(
                &with_security(
                    json!({"type": "apiKey", "in": "query", "name": "key"}),
                    json!([])
                ),
                &manual
            )
            .expect("imports")
            .definition
            .auth,
            json!({"type": "basic"})
        );
        let bad = ImportOptions {
            auth: Some(json!("basic")),
            ..options()
        };
        assert!(matches!(
            import(&petstore(), &bad),
            Err(ImportError::Options(_))
        ));
    }

    #[test]
    fn the_auth_is_the_most_used_scheme() {
        // Petstore: the document's api_key covers all but createPet (oauth2).
        let imported = import(&petstore(), &options()).expect("imports");
        assert_eq!(
            imported.definition.auth,
            json!({"type": "api_key", "in": "header", "name": "X-API-Key"})
        );
        assert!(has_note(
            &imported,
            "auth: `api_key`, accepted by 12 of the 13 selected operations"
        ));
        assert!(has_note(
            &imported,
            "auth: 1 selected operations require another security scheme"
        ));
        // Selecting the oauth2 operation alone picks oauth2, its authorization code flow and the
        // scopes it asks.
        let only = ImportOptions {
            select: vec!["createPet".into()],
            ..options()
        };
        let imported = import(&petstore(), &only).expect("imports");
        assert_eq!(
            imported.definition.auth,
            json!({
                "type": "oauth2",
                "token_url": "https://auth.petstore.test/token",
                "authorization_url": "https://auth.petstore.test/authorize",
                "scopes": ["write:pets"]
            })
        );
        // No security at all: none, with a note.
        let plain = doc(
            json!({"/a": {"get": {"responses": {"204": {"description": "ok"}}}}}),
            json!({}),
        );
        let imported = import(&plain, &options()).expect("imports");
        assert_eq!(imported.definition.auth, json!({"type": "none"}));
        assert!(has_note(&imported, "declares no security requirement"));
    }

    // ---------------------------------------------------------------------------------------
    // Names and selection

    #[test]
    fn names_are_sanitised_and_unique() {
        let ops = |ids: &[&str]| {
            let mut paths = serde_json::Map::new();
            for (i, id) in ids.iter().enumerate() {
                let mut op = json!({"responses": {"204": {"description": "ok"}}});
                if !id.is_empty() {
                    op["operationId"] = json!(id);
                }
                paths.insert(format!("/p{i:02}/{{x-y}}/z.json"), json!({"get": op}));
            }
            let imported =
                import(&doc(Value::Object(paths), json!({})), &options()).expect("imports");
            check_definition(&imported.definition);
            imported
                .definition
                .actions
                .iter()
                .map(|a| a.name.clone())
                .collect::<Vec<_>>()
        };
        let long = "a".repeat(80);
        assert_eq!(
            ops(&[
                "issues/list-for-repo",
                "listPets",
                "getHTTPStatus",
                "list_pets",
                "2fa.enable",
                "",
                "..",
                "Ünïcode op",
                &long,
                &long,
            ]),
            [
                "issues_list_for_repo",
                "list_pets",
                "get_http_status",
                "list_pets_2",
                "op_2fa_enable",
                "get_p05_x_y_z_json",
                "get_p06_x_y_z_json",
                "n_code_op",
                "a".repeat(64).as_str(),
                format!("{}_2", "a".repeat(62)).as_str(),
            ]
        );
    }

    #[test]
    fn selects_by_operation_id_tag_and_glob() {
        let names = |select: &[&str]| -> Result<Vec<String>, ImportError> {
            let options = ImportOptions {
                select: select.iter().map(|s| s.to_string()).collect(),
                ..options()
            };
            let imported = import(&petstore(), &options)?;
            let mut names: Vec<String> = imported
                .definition
                .actions
                .iter()
                .map(|a| a.name.clone())
                .collect();
            names.extend(
                imported
                    .skipped
                    .iter()
                    .map(|s| format!("skipped:{}", s.operation)),
            );
            Ok(names)
        };
        assert_eq!(names(&["showPetById"]).expect("ok"), ["show_pet_by_id"]);
        assert_eq!(
            names(&["tag:owners", "getTree"]).expect("ok"),
            ["owners_list_pets", "get_tree"]
        );
        assert_eq!(
            names(&["*Pet"]).expect("ok"),
            ["create_pet", "delete_pet", "update_pet"]
        );
        assert_eq!(
            names(&["GET /pets*"]).expect("ok"),
            ["list_pets", "show_pet_by_id"]
        );
        assert_eq!(names(&["POST /login"]).expect("ok"), ["post_login"]);
        assert_eq!(
            names(&["uploadPhoto", "putNotes"]).expect("ok"),
            ["put_notes", "skipped:uploadPhoto"]
        );
        assert_eq!(names(&["tag:OWNERS"]).expect("ok"), ["owners_list_pets"]);
        assert!(matches!(names(&["nope"]), Err(ImportError::Select(p)) if p == "nope"));
        // Everything selected skipped: an error that lists why.
        match names(&["uploadPhoto"]) {
            Err(ImportError::NoActions { selected, skipped }) => {
                assert_eq!(selected, 1);
                assert_eq!(skipped[0].operation, "uploadPhoto");
            }
            other => panic!("{other:?}"),
        }
        let imported = import(
            &petstore(),
            &ImportOptions {
                select: vec!["tag:pets".into()],
                ..options()
            },
        )
        .expect("imports");
        assert_eq!(
            (imported.total_operations, imported.selected_operations),
            (13, 7)
        );
        assert!((imported.share() - 6.0 / 7.0).abs() < 1e-9);
    }

    // ---------------------------------------------------------------------------------------
    // Documents it refuses, base URLs

    #[test]
    fn refuses_what_it_cannot_import() {
        let swagger =
            json!({"swagger": "2.0", "info": {"title": "x", "version": "1"}, "paths": {}});
        assert_eq!(import(&swagger, &options()), Err(ImportError::Swagger2));
        assert!(
            import(&swagger, &options())
                .expect_err("refused")
                .to_string()
                .contains("Swagger 2.0")
        );
        for version in ["2.0", "4.0.0", "3", "x"] {
            let spec = json!({"openapi": version, "paths": {}});
            assert!(
                matches!(import(&spec, &options()), Err(ImportError::Version(_))),
                "{version}"
            );
        }
        assert!(matches!(
            import(&json!([]), &options()),
            Err(ImportError::NotOpenApi(_))
        ));
        assert!(matches!(
            import(&json!({"openapi": 3}), &options()),
            Err(ImportError::NotOpenApi(_))
        ));
        // No operation at all.
        let empty = doc(json!({}), json!({}));
        assert!(matches!(
            import(&empty, &options()),
            Err(ImportError::NoActions { selected: 0, .. })
        ));
    }

    #[test]
    fn base_urls() {
        let mut spec = petstore();
        spec["servers"] = json!([{"url": "/api/v1"}]);
        assert!(matches!(
            import(&spec, &options()),
            Err(ImportError::BaseUrl(_))
        ));
        spec.as_object_mut().expect("object").remove("servers");
        assert!(matches!(
            import(&spec, &options()),
            Err(ImportError::BaseUrl(_))
        ));
        let given = ImportOptions {
            base_url: Some("https://{config.host}.example.test/api/".into()),
            ..options()
        };
        let imported = import(&spec, &given).expect("imports");
        assert_eq!(
            imported.definition.base_url,
            "https://{config.host}.example.test/api"
        );
        assert_eq!(
            imported.definition.config_schema.as_ref().expect("config")["required"],
            json!(["host"])
        );
        let ftp = ImportOptions {
            base_url: Some("ftp://x.test".into()),
            ..options()
        };
        assert!(matches!(import(&spec, &ftp), Err(ImportError::BaseUrl(_))));

        // A whole host name as a variable cannot be one DNS label of the config: its default,
        // noted (GitHub Enterprise Server's `{hostname}`).
        spec["servers"] = json!([{"url": "{protocol}://{hostname}/api/v3", "variables": {
        "protocol": {"default": "https"}, "hostname": {"default": "HOSTNAME"}}}]);
        let imported = import(&spec, &options()).expect("imports");
        assert_eq!(imported.definition.base_url, "https://HOSTNAME/api/v3");
        assert!(has_note(&imported, "`hostname` is its default `HOSTNAME`"));

        // An operation on another server is skipped; one on the same server with more path is
        // imported under that path.
        let mut spec = doc(
            json!({
                "/a": {"get": {"operationId": "other", "servers": [{"url": "https://uploads.example.test"}], "responses": {"204": {"description": "ok"}}}},
                "/b": {"servers": [{"url": "https://api.example.test/v2"}], "get": {"operationId": "deeper", "responses": {"204": {"description": "ok"}}}}
            }),
            json!({}),
        );
        let imported = import(&spec, &options()).expect("imports");
        assert!(
            skipped_reason(&imported, "other")
                .contains("its own server `https://uploads.example.test`")
        );
        assert_eq!(action(&imported, "deeper").endpoint, "/v2/b");
        spec["servers"] = json!([{"url": "https://api.example.test/"}]);
        assert_eq!(
            import(&spec, &options())
                .expect("imports")
                .definition
                .base_url,
            "https://api.example.test"
        );
    }

    #[test]
    fn odd_paths_and_parameters() {
        let spec = doc(
            json!({
                "/files/{name}.json": {"get": {"operationId": "file", "responses": {"204": {"description": "ok"}}}},
                "/a b/%zz/{id}": {"get": {"operationId": "spaces", "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}], "responses": {"204": {"description": "ok"}}}},
                "/search?kind=x": {"get": {"operationId": "query_in_path", "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}], "responses": {"204": {"description": "ok"}}}},
                "/obj/{o}": {"get": {"operationId": "object_path", "parameters": [{"name": "o", "in": "path", "required": true, "schema": {"type": "object"}}], "responses": {"204": {"description": "ok"}}}},
                "/label/{l}": {"get": {"operationId": "label", "parameters": [{"name": "l", "in": "path", "required": true, "style": "label", "schema": {"type": "string"}}], "responses": {"204": {"description": "ok"}}}},
                "/req": {"get": {"operationId": "required_bad_query", "parameters": [{"name": "filter[x]", "in": "query", "required": true, "schema": {"type": "string"}}], "responses": {"204": {"description": "ok"}}}},
                "/trace": {"trace": {"operationId": "trace", "responses": {"204": {"description": "ok"}}}},
                "/broken": {"get": "not an operation"},
                "/dangling": {"get": {"operationId": "dangling", "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Missing"}}}}}}},
                "/external": {"get": {"operationId": "external", "parameters": [{"$ref": "other.yaml#/p"}], "responses": {"204": {"description": "ok"}}}}
            }),
            json!({}),
        );
        let imported = import(&spec, &options()).expect("imports");
        check_definition(&imported.definition);
        let file = action(&imported, "file");
        assert_eq!(file.endpoint, "/files/{name}.json");
        assert_eq!(
            file.path_schema.as_ref().expect("path")["properties"]["name"],
            json!({"type": "string"})
        );
        assert!(has_note(
            &imported,
            "`file`: the path parameter `name` is not declared"
        ));
        assert_eq!(action(&imported, "spaces").endpoint, "/a%20b/%25zz/{id}");
        assert_eq!(
            action(&imported, "query_in_path").endpoint,
            "/search?kind=x{&q}"
        );
        assert!(skipped_reason(&imported, "object_path").contains("is an object"));
        assert!(skipped_reason(&imported, "label").contains("`label` style"));
        assert!(skipped_reason(&imported, "required_bad_query").contains("`filter[x]`"));
        assert!(skipped_reason(&imported, "trace").contains("TRACE"));
        assert!(skipped_reason(&imported, "GET /broken").contains("not a JSON object"));
        assert!(skipped_reason(&imported, "dangling").contains("does not resolve"));
        assert!(skipped_reason(&imported, "external").contains("outside the document"));
    }

    // ---------------------------------------------------------------------------------------
    // Size, depth, determinism, garbage

    /// `levels` schemas, each with `fan` properties referring to the next: `fan^levels` nodes
    /// once inlined.
    fn fanout(levels: usize, fan: usize) -> Value {
        let mut schemas = serde_json::Map::new();
        for level in 0..levels {
            let mut properties = serde_json::Map::new();
            for i in 0..fan {
                let property = if level + 1 < levels {
                    json!({"$ref": format!("#/components/schemas/L{}", level + 1), "description": format!("property {i} of level {level}")})
                } else {
                    json!({"type": "string", "description": "a leaf with some text to make it weigh"})
                };
                properties.insert(format!("p{i}"), property);
            }
            schemas.insert(
                format!("L{level}"),
                json!({"type": "object", "properties": properties}),
            );
        }
        doc(
            json!({"/big": {"post": {
                "operationId": "big",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/L0"}}}},
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/L0"}}}}}
            }}}),
            json!({"schemas": schemas}),
        )
    }

    #[test]
    fn large_schemas_are_cut_to_fit() {
        // 6^5 = 7776 leaves per schema: about 4 MB inlined, under the node budget.
        let imported = import(&fanout(6, 6), &options()).expect("imports");
        check_definition(&imported.definition);
        assert!(
            has_note(&imported, "to fit in 256 KB"),
            "{:?}",
            imported.notes
        );
        let big = action(&imported, "big");
        let body = big.body_schema.as_ref().expect("body");
        assert_eq!(
            body["properties"]["p0"]["description"],
            "property 0 of level 0"
        );
        // 10^7: far past the node budget, converted again with a depth limit.
        let imported = import(&fanout(8, 10), &options()).expect("imports");
        check_definition(&imported.definition);
        assert!(has_note(&imported, "cut at depth"), "{:?}", imported.notes);
    }

    #[test]
    fn long_reference_chains_do_not_overflow() {
        let mut schemas = serde_json::Map::new();
        for i in 0..5_000 {
            schemas.insert(
                format!("S{i}"),
                json!({"$ref": format!("#/components/schemas/S{}", i + 1)}),
            );
        }
        schemas.insert(
            "S5000".into(),
            json!({"type": "object", "properties": {"next": {"$ref": "#/components/schemas/S0"}}}),
        );
        let spec = doc(
            json!({"/chain": {"get": {"operationId": "chain", "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/S0"}}}}}}}}),
            json!({"schemas": schemas}),
        );
        let imported = import(&spec, &options()).expect("imports");
        check_definition(&imported.definition);
    }

    #[test]
    fn output_is_deterministic() {
        let first =
            serde_json::to_string(&import(&petstore(), &options()).expect("imports").definition)
                .expect("json");
        for _ in 0..3 {
            let again = serde_json::to_string(
                &import(&petstore(), &options()).expect("imports").definition,
            )
            .expect("json");
            assert_eq!(again, first);
        }
    }

    /// Arbitrary JSON, biased towards the words an OpenAPI document uses.
    fn arb_json() -> impl Strategy<Value = Value> {
        let word = prop::sample::select(vec![
            "openapi",
            "3.0.0",
            "3.1.0",
            "paths",
            "/a/{x}",
            "get",
            "post",
            "parameters",
            "name",
            "in",
            "path",
            "query",
            "header",
            "cookie",
            "schema",
            "type",
            "object",
            "array",
            "items",
            "properties",
            "required",
            "$ref",
            "#/components/schemas/A",
            "#",
            "#/",
            "components",
            "schemas",
            "A",
            "nullable",
            "allOf",
            "anyOf",
            "enum",
            "responses",
            "200",
            "content",
            "application/json",
            "requestBody",
            "security",
            "securitySchemes",
            "servers",
            "url",
            "https://x.test",
            "{x}",
            "x",
            "style",
            "explode",
            "exclusiveMinimum",
            "minimum",
            "operationId",
            "tags",
            "flows",
        ])
        .prop_map(str::to_owned);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            word.clone().prop_map(Value::String),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(word.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_on_garbage(value in arb_json()) {
            if let Ok(imported) = import(&value, &options()) {
                check_definition(&imported.definition);
            }
        }

        #[test]
        fn never_panics_on_a_damaged_description(
            at in prop::collection::vec(any::<prop::sample::Index>(), 1..4),
            replacement in arb_json(),
        ) {
            // Replace a few values of the petstore, anywhere, with garbage.
            let mut spec = petstore();
            for index in &at {
                let mut pointers = Vec::new();
                collect_pointers(&spec, String::new(), &mut pointers);
                let pointer = index.get(&pointers).clone();
                if let Some(slot) = spec.pointer_mut(&pointer) {
                    *slot = replacement.clone();
                }
            }
            if let Ok(imported) = import(&spec, &options()) {
                check_definition(&imported.definition);
            }
        }
    }

    fn collect_pointers(value: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match value {
            Value::Object(map) => {
                for (key, sub) in map {
                    collect_pointers(
                        sub,
                        format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(list) => {
                for (i, sub) in list.iter().enumerate() {
                    collect_pointers(sub, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
}
