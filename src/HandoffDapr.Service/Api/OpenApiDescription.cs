using System.Text.Json.Nodes;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Security;
using Microsoft.AspNetCore.Mvc.ApiExplorer;
using Microsoft.AspNetCore.Mvc.ModelBinding;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.Extensions.Options;
using Microsoft.OpenApi;

namespace HandoffDapr.Service.Api;

/// <summary>
/// What the generated OpenAPI document cannot know from the handlers' signatures. Ids and <c>limit</c> are bound as
/// text so that a bad value gets our own problem instead of the framework's exception, which makes the generator
/// call them strings; the document says what a client must send. Required body fields are nullable in the records
/// only so that a missing one gets our own 400; the document says they must be there.
/// </summary>
public static class OpenApiDescription
{
    private static readonly HashSet<string> IdParameters = ["runId", "integrationId", "run_id", "group_id"];

    public static IServiceCollection AddHandoffOpenApi(this IServiceCollection services) =>
        services.AddSingleton<IApiDescriptionProvider, JsonRequestBodies>()
            .AddOpenApi(options => options.AddOperationTransformer((operation, context, _) =>
        {
            foreach (var parameter in operation.Parameters?.OfType<OpenApiParameter>() ?? [])
            {
                if (IdParameters.Contains(parameter.Name!))
                {
                    parameter.Schema = Id();
                }
                else if (parameter.Name == "agentId")
                {
                    // Of another shape it is no agent of the run: a 404 unknown-agent, not a call to the provider.
                    parameter.Schema = AgentId("As the run's coding_agents name it.");
                }
                else if (parameter.Name == "limit")
                {
                    parameter.Schema = new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32", Minimum = "1", Maximum = "200", Default = JsonValue.Create(50) };
                }
            }

            DeclareHeaders(operation);
            DeclareCallerCheck(operation, context);
            if (operation.OperationId == WebhookEndpoints.OperationId)
            {
                // Read as bytes for its signature, whatever its Content-Type: the generator sees no body parameter.
                operation.RequestBody = new OpenApiRequestBody { Required = true, Description = "Cursor's webhook event, as signed (X-Webhook-Signature).", Content = new Dictionary<string, OpenApiMediaType> { ["application/json"] = new() { Schema = CursorWebhookEvent() } } };
                // Read from the request itself, so the generator sees no parameter: without it every request is a 401.
                operation.Parameters ??= [];
                operation.Parameters.Add(new OpenApiParameter
                {
                    Name = WebhookEndpoints.SignatureHeader, In = ParameterLocation.Header, Required = true,
                    Description = "The HMAC-SHA256 of the raw body with the integration's WebhookSecret, in hex, "
                        + "with or without a sha256= prefix.",
                    Schema = new OpenApiSchema
                    {
                        Type = JsonSchemaType.String, Pattern = "^(sha256=)?[0-9A-Fa-f]{64}$",
                    },
                });
            }

            return Task.CompletedTask;
        }).AddSchemaTransformer((schema, context, _) =>
        {
            // The limits a body is refused for (a 400) are stated, so a client generated from the document does not send it.
            var maxText = context.ApplicationServices.GetRequiredService<IOptions<HandoffOptions>>().Value.MaxInstructionLength;
            // JSON Schema's maxLength counts code points; the service counts UTF-16 units (as its prompt caps do), so
            // text of many emoji could pass maxLength and still be refused: the description says which count applies.
            var textLimit = $"At most {maxText} UTF-16 code units: a character outside the Basic Multilingual Plane, such as most emoji, counts as two.";
            var type = context.JsonTypeInfo.Type;
            if (type == typeof(HandoffRequest) && schema.Properties is { } trigger)
            {
                trigger["group_id"] = Id();
                trigger["integration_id"] = Id();
                if (trigger.TryGetValue("instruction", out var instruction) && instruction is OpenApiSchema text)
                {
                    // The follow-up's rule (below): the pattern rules out spaces only, the description says the rest.
                    text.MaxLength = maxText;
                    text.Pattern = @"\S";
                    text.Description = "When given, with at least one visible character (not only spaces, controls or zero-width characters); leave it out, or null, for none. " + textLimit;
                }
            }
            else if (type == typeof(FollowupRequest) && schema.Properties is { } followup)
            {
                // Only spaces, controls or zero-width characters are refused (PrintableText.HasVisible): the pattern rules out
                // the spaces, the description says the rest.
                followup["text"] = new OpenApiSchema
                {
                    Type = JsonSchemaType.String, MinLength = 1, MaxLength = maxText, Pattern = @"\S",
                    Description = "With at least one visible character (not only spaces, controls or zero-width characters). " + textLimit,
                };
            }
            else if (RunIdProperties.TryGetValue(type, out var ids) && schema.Properties is { } run)
            {
                // Nullable where the record allows it (the snapshot's reader does): only the range is added.
                foreach (var name in ids)
                {
                    if (run.TryGetValue(name, out var property) && property is OpenApiSchema id)
                    {
                        id.Minimum = "1";
                        id.Maximum = MaxId;
                    }
                }

                if (type == typeof(RunSnapshot))
                {
                    // Nullable in the records (the stored runs' reader takes them so), but a run from outside must name its group.
                    schema.Description = "A run must name its group: group.id or metadata.group_id (equal when both are given; in a trigger, equal to group_id).";
                    schema.AnyOf = [NamesGroup("group", "id"), NamesGroup("metadata", "group_id")];
                }
            }
            else if (type == typeof(Microsoft.AspNetCore.Mvc.ProblemDetails))
            {
                DescribeProblem(schema);
            }
            else if (type == typeof(DaprEventReply) && schema.Properties is { } reply && reply.TryGetValue("status", out var answer)
                && answer is OpenApiSchema status)
            {
                // Embedded mode refuses an event with a problem: its only reply is SUCCESS. daprd may get all three.
                status.Enum = context.ApplicationServices.GetRequiredService<HostingContext>().Mode == HostingMode.Dapr
                    ? [JsonValue.Create("SUCCESS"), JsonValue.Create("RETRY"), JsonValue.Create("DROP")]
                    : [JsonValue.Create("SUCCESS")];
            }
            else if (type == typeof(TimelineEntry) && schema.Properties is { } entry)
            {
                // The constructor's defaults made them look optional: the API writes every one, null included.
                schema.Required = entry.Keys.ToHashSet();
            }
            else if (type == typeof(HandoffPreferences) && schema.Properties is { } preferences
                && preferences.TryGetValue("repositories", out var repositories) && repositories is OpenApiSchema list)
            {
                list.MaxItems = SnapshotRules.MaxRepositoryEntries;
            }

            return Task.CompletedTask;
        }));

    /// <summary>
    /// The headers the answers carry that a client acts on: the generator sees only the handlers' result types. A 202's
    /// <c>Location</c> (the run to read), a 429's <c>Retry-After</c> (<see cref="RetryAfterResult"/>, whole seconds)
    /// and a 401's <c>WWW-Authenticate</c> (the challenge every 401 names: the bearer token, daprd's header, or a webhook's signature).
    /// A 415's <c>Accept-Encoding</c>, only on the one for a compressed body (RFC 9110 §15.5.16), is not required.
    /// </summary>
    private static void DeclareHeaders(OpenApiOperation operation)
    {
        foreach (var (status, response) in operation.Responses ?? [])
        {
            if (response is not OpenApiResponse answer)
            {
                continue;
            }

            var header = status switch
            {
                "202" => ("Location", new OpenApiHeader { Description = "Where the run's handoff state is read (GET).", Required = true, Schema = new OpenApiSchema { Type = JsonSchemaType.String, Format = "uri-reference" } }),
                "429" => ("Retry-After", new OpenApiHeader { Description = "Seconds to wait before sending the request again.", Required = true, Schema = new OpenApiSchema { Type = JsonSchemaType.Integer, Minimum = "1" } }),
                "415" => ("Accept-Encoding", new OpenApiHeader { Description = "identity, on the 415 for a compressed body (unsupported-content-encoding): send it uncompressed.", Schema = new OpenApiSchema { Type = JsonSchemaType.String } }),
                "401" => ("WWW-Authenticate", new OpenApiHeader { Description = "What would be accepted: a bearer token, daprd's dapr-api-token header, or (webhooks) the body's HMAC-SHA256 signature.", Required = true, Schema = new OpenApiSchema { Type = JsonSchemaType.String } }),
                _ => default((string, OpenApiHeader)?),
            };
            if (header is var (name, value))
            {
                answer.Headers ??= new Dictionary<string, IOpenApiHeader>();
                answer.Headers[name] = value;
            }
        }
    }

    /// <summary>
    /// The credentials the caller check in use wants (<see cref="CallerCheckInUse"/>), on the operations behind it (not
    /// the webhooks, signed instead): without them a generated client has no way to send the token and gets a 401. None
    /// for a loopback-only or unchecked API, which takes no credentials.
    /// </summary>
    private static void DeclareCallerCheck(OpenApiOperation operation, OpenApiOperationTransformerContext context)
    {
        // Open routes (the webhook, signed instead) are behind no check.
        if (!context.Description.ActionDescriptor.EndpointMetadata.OfType<Microsoft.AspNetCore.Authorization.IAuthorizeData>().Any())
        {
            return;
        }

        var check = context.ApplicationServices.GetRequiredService<CallerCheckInUse>().Check;
        // Only the refusals the check in use gives: a token check a 401 (a caller with the token always passes),
        // loopback-only a 403, no check neither. The API group declares both for every set-up.
        if (check is not (CallerCheck.BearerToken or CallerCheck.DaprApiToken))
        {
            operation.Responses?.Remove("401");
        }

        if (check != CallerCheck.LoopbackOnly)
        {
            operation.Responses?.Remove("403");
        }

        var scheme = check switch
        {
            CallerCheck.BearerToken => ("bearer", new OpenApiSecurityScheme { Type = SecuritySchemeType.Http, Scheme = "bearer", Description = "Handoff:ApiToken." }),
            CallerCheck.DaprApiToken => ("dapr-api-token", new OpenApiSecurityScheme { Type = SecuritySchemeType.ApiKey, In = ParameterLocation.Header, Name = TokenAuthenticationOptions.DaprApiTokenHeader, Description = "daprd's app token (APP_API_TOKEN), which daprd adds to the calls it forwards." }),
            _ => default((string, OpenApiSecurityScheme)?),
        };
        if (scheme is not var (name, value))
        {
            return;
        }

        context.Document!.Components ??= new OpenApiComponents();
        context.Document.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
        context.Document.Components.SecuritySchemes[name] = value;
        operation.Security = [new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(name, context.Document)] = [] }];
    }

    /// <summary>
    /// What <see cref="Core.Providers.Cursor.CursorWebhook.TryParse"/> reads: a <c>statusChange</c> (or unnamed) event
    /// without a valid agent id or a status is a 400; another event is answered 204 and ignored, whatever else it carries.
    /// So the id and status (and the id's shape) are required only of a statusChange: one branch of a <c>oneOf</c> each,
    /// told apart by <c>event</c> (an OpenAPI discriminator cannot name "any other value" or an absent one).
    /// </summary>
    private static OpenApiSchema CursorWebhookEvent()
    {
        static OpenApiSchema Text(string? description = null) => new() { Type = JsonSchemaType.String, Description = description };
        static OpenApiSchema Object(params (string Name, OpenApiSchema Schema)[] properties) =>
            new() { Type = JsonSchemaType.Object, Properties = properties.ToDictionary(p => p.Name, p => (IOpenApiSchema)p.Schema) };
        OpenApiSchema StatusChangeName() => new() { Type = JsonSchemaType.String, Enum = [JsonValue.Create(Core.Providers.Cursor.CursorWebhook.StatusChangeEvent)] };
        var schema = Object(
            ("event", Text("statusChange (the default when absent); any other event is answered 204 and ignored.")),
            ("id", Text("The agent's id: required in a statusChange.")),
            ("status", Text("CREATING, RUNNING, FINISHED, ERROR, EXPIRED or STOPPED: required in a statusChange.")),
            ("summary", Text()),
            ("source", Object(("repository", Text("The agent's repository, github.com/{owner}/{name}: a report about another than the launch's is not applied.")))),
            ("target", Object(("url", Text()), ("branchName", Text()), ("prUrl", Text()))));
        var statusChange = Object(
            ("event", StatusChangeName()),
            ("id", AgentId("The agent's id.")),
            ("status", Text()));
        statusChange.Title = "statusChange";
        statusChange.Description = "A status report (event statusChange, or no event): the agent's id and its status are required.";
        statusChange.Required = new HashSet<string> { "id", "status" };
        var otherEvent = Object(("event", new OpenApiSchema { Type = JsonSchemaType.String, Not = StatusChangeName() }));
        otherEvent.Title = "otherEvent";
        otherEvent.Description = "Any other event: answered 204 and ignored, nothing else required.";
        otherEvent.Required = new HashSet<string> { "event" };
        schema.OneOf = [statusChange, otherEvent];
        return schema;
    }

    /// <summary>
    /// Every problem as <see cref="Problems"/> writes it: type, title, status and detail always, never <c>instance</c>;
    /// the trace as <c>trace_id</c> (not in the 503 written once shutdown is over), and <c>failure_type</c> on a provider's
    /// failure (409 <c>not-supported</c>, 502 <c>provider-failed</c>, 504 <c>outcome-unknown</c>). The framework's schema
    /// had all four nullable and optional, the never-sent <c>instance</c>, and neither extension.
    /// </summary>
    private static void DescribeProblem(OpenApiSchema schema)
    {
        static OpenApiSchema Text(string description, string? format = null) => new() { Type = JsonSchemaType.String, Format = format, Description = description };
        schema.Properties = new Dictionary<string, IOpenApiSchema>
        {
            ["type"] = Text("The problem's stable identifier, https://handoff-dapr.dev/problems/{slug}.", "uri"),
            ["title"] = Text("The problem type's fixed summary."),
            ["status"] = new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32", Description = "The HTTP status of the answer." },
            ["detail"] = Text("This occurrence, in fixed text."),
            ["failure_type"] = Text("Only on a provider's failure (409 not-supported, 502 provider-failed, 504 outcome-unknown): the failure type, as in a launch's failure_type."),
            ["trace_id"] = Text("The W3C trace context of the request, to find it in the logs."),
        };
        schema.Required = new HashSet<string> { "type", "title", "status", "detail" };
    }

    /// <summary>The ids of a run snapshot that <see cref="SnapshotRules.Check"/> holds to 1 … 2^53 − 1.</summary>
    private static readonly Dictionary<Type, string[]> RunIdProperties = new()
    {
        [typeof(RunSnapshot)] = ["run_id", "organization_id", "project_id"],
        [typeof(RunGroup)] = ["id"],
        [typeof(RunMetadata)] = ["group_id"],
        [typeof(AutomationHandoff)] = ["integration_id"],
    };

    private static readonly string MaxId = Core.Model.WholeIds.Max.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static OpenApiSchema NamesGroup(string part, string id) => new()
    {
        Required = new HashSet<string> { part },
        Properties = new Dictionary<string, IOpenApiSchema>
        {
            [part] = new OpenApiSchema { Type = JsonSchemaType.Object, Required = new HashSet<string> { id }, Properties = new Dictionary<string, IOpenApiSchema> { [id] = Id() } },
        },
    };

    /// <summary>
    /// Describes the JSON body an endpoint reads itself (<see cref="JsonBody.AcceptsJson"/>) as the framework describes an
    /// <c>Accepts</c> one, without the <c>Accepts</c> metadata that routing would also check the Content-Type against.
    /// </summary>
    private sealed class JsonRequestBodies : IApiDescriptionProvider
    {
        public int Order => 0; // after the framework's endpoint descriptions (-1100), which this completes

        public void OnProvidersExecuting(ApiDescriptionProviderContext context)
        {
            foreach (var description in context.Results)
            {
                if (description.ActionDescriptor.EndpointMetadata.OfType<JsonBody.JsonRequestBody>().FirstOrDefault() is not { } body)
                {
                    continue;
                }

                description.ParameterDescriptions.Add(new ApiParameterDescription { Name = body.Type.Name, Type = body.Type, Source = BindingSource.Body, IsRequired = true });
                foreach (var mediaType in JsonBody.MediaTypes)
                {
                    description.SupportedRequestFormats.Add(new ApiRequestFormat { MediaType = mediaType });
                }
            }
        }

        public void OnProvidersExecuted(ApiDescriptionProviderContext context)
        {
        }
    }

    /// <summary>The shape <see cref="Core.Providers.AgentIds.IsValid"/> takes, "." and ".." refused as it refuses them.</summary>
    private static OpenApiSchema AgentId(string description) =>
        new() { Type = JsonSchemaType.String, MinLength = 1, MaxLength = Core.Providers.AgentIds.MaxLength, Pattern = @"^(?!\.{1,2}$)[A-Za-z0-9._-]+$", Description = description };

    private static OpenApiSchema Id() =>
        new() { Type = JsonSchemaType.Integer, Format = "int64", Minimum = "1", Maximum = MaxId };
}
