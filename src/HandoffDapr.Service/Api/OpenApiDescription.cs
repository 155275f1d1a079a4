using System.Text.Json.Nodes;
using Microsoft.AspNetCore.OpenApi;
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
        services.AddOpenApi(options => options.AddOperationTransformer((operation, _, _) =>
        {
            foreach (var parameter in operation.Parameters?.OfType<OpenApiParameter>() ?? [])
            {
                if (IdParameters.Contains(parameter.Name!))
                {
                    parameter.Schema = Id();
                }
                else if (parameter.Name == "limit")
                {
                    parameter.Schema = new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32", Minimum = "1", Maximum = "200", Default = JsonValue.Create(50) };
                }
            }

            return Task.CompletedTask;
        }).AddSchemaTransformer((schema, context, _) =>
        {
            if (context.JsonTypeInfo.Type == typeof(HandoffRequest) && schema.Properties is { } trigger)
            {
                trigger["group_id"] = Id();
                trigger["integration_id"] = Id();
            }
            else if (context.JsonTypeInfo.Type == typeof(FollowupRequest) && schema.Properties is { } followup)
            {
                followup["text"] = new OpenApiSchema { Type = JsonSchemaType.String, MinLength = 1 };
            }

            return Task.CompletedTask;
        }));

    private static OpenApiSchema Id() =>
        new() { Type = JsonSchemaType.Integer, Format = "int64", Minimum = "1", Maximum = Core.Model.WholeIds.Max.ToString(System.Globalization.CultureInfo.InvariantCulture) };
}
