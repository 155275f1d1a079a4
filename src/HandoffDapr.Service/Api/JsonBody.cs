using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Configuration;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;

namespace HandoffDapr.Service.Api;

/// <summary>
/// Reads a JSON body with a hard size limit and turns every way it can be wrong into a 4xx problem, so a
/// client's mistake can never become a 500. The parser's message is not echoed: only where it failed.
/// </summary>
public static class JsonBody
{
    public static async Task<(T? Value, ProblemHttpResult? Problem)> ReadAsync<T>(
        HttpRequest request, JsonTypeInfo<T> typeInfo, IOptions<HandoffOptions> options, CancellationToken cancellationToken)
    {
        var (body, problem) = await ReadBytesAsync(request, options, cancellationToken);
        if (body is null)
        {
            return (default, problem);
        }

        using (body)
        {
            return Parse(body.Memory, typeInfo);
        }
    }

    /// <summary>The body's bytes in a pooled buffer (dispose it), or the problem that stopped reading it (an empty body is one).</summary>
    /// <param name="limit">The largest body read; by default <see cref="HandoffOptions.MaxRequestBodyBytes"/>.</param>
    public static Task<(PooledBody? Body, ProblemHttpResult? Problem)> ReadBytesAsync(
        HttpRequest request, IOptions<HandoffOptions> options, CancellationToken cancellationToken, long? limit = null) =>
        IsJson(request.ContentType)
            ? RequestBody.ReadAsync(request, limit ?? options.Value.MaxRequestBodyBytes, cancellationToken)
            : Task.FromResult<(PooledBody?, ProblemHttpResult?)>((null, Problems.UnsupportedMediaType()));

    private static (T? Value, ProblemHttpResult? Problem) Parse<T>(ReadOnlyMemory<byte> body, JsonTypeInfo<T> typeInfo)
    {
        try
        {
            var value = JsonSerializer.Deserialize(body.Span, typeInfo);
            return value is null ? (default, Problems.InvalidBody("The body must be a JSON object.")) : (value, null);
        }
        catch (JsonException exception)
        {
            return (default, Problems.InvalidBody(Unreadable("The body", exception)));
        }
        catch (Exception exception) when (exception is InvalidOperationException or NotSupportedException or ArgumentException or FormatException or OverflowException)
        {
            return (default, Problems.InvalidBody("The body is not valid JSON of the expected shape."));
        }
    }

    /// <summary>The media types read as JSON (a request without a Content-Type is read as JSON too).</summary>
    public static readonly string[] MediaTypes = ["application/json", "application/cloudevents+json", "text/json"];

    /// <summary>
    /// Declares the body for the OpenAPI document only (<see cref="OpenApiDescription"/>), in each of
    /// <see cref="MediaTypes"/>. Not as <c>Accepts</c>: routing would then refuse another Content-Type with a 415 before
    /// the caller check, telling a caller without credentials what the endpoint takes; <see cref="ReadBytesAsync"/> refuses
    /// it after.
    /// </summary>
    public static RouteHandlerBuilder AcceptsJson<T>(this RouteHandlerBuilder endpoint) where T : notnull =>
        endpoint.WithMetadata(new JsonRequestBody(typeof(T)));

    /// <summary>The type of the JSON body an endpoint reads, for its OpenAPI description.</summary>
    public sealed record JsonRequestBody(Type Type);

    /// <summary>
    /// Exactly one of <see cref="MediaTypes"/> (routing alone would also let <c>+json</c> relatives such as
    /// <c>application/json-patch+json</c> through), in UTF-8 if a charset is named: the reader decodes nothing else,
    /// so another charset is a 415, not a parse error on bytes read the wrong way.
    /// </summary>
    private static bool IsJson(string? contentType)
    {
        if (contentType is null || IsListed(contentType))
        {
            return true; // the usual case, without parsing the header
        }

        if (!MediaTypeHeaderValue.TryParse(contentType, out var parsed) || !IsListed(parsed.MediaType.Value))
        {
            return false;
        }

        var charset = HeaderUtilities.RemoveQuotes(parsed.Charset);
        return charset.HasValue is false
            || charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase)
            || charset.Equals("utf8", StringComparison.OrdinalIgnoreCase);
    }

    private static bool IsListed(string? mediaType)
    {
        foreach (var type in MediaTypes)
        {
            if (string.Equals(mediaType, type, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Why a body the reader refused cannot be read, and where (the parser's message is not echoed). The causes are
    /// named together: the reader's exception does not say which it met, and "not valid JSON" alone misled a client
    /// whose JSON was valid but named a property twice.
    /// </summary>
    public static string Unreadable(string subject, JsonException exception)
    {
        var where = exception.Path is { Length: > 0 } path ? $" at {Bounded(path)}" : string.Empty;
        return $"{subject} cannot be read{where}: it is not JSON, a value is not of the expected type, or a property is named twice (in any letter case).";
    }

    // A JSON path is built from the client's own property names: bound it and keep it printable.
    private static string Bounded(string path) => PrintableText.Bounded(path, 80);
}
