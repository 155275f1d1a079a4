using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using HandoffDapr.Service.Configuration;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

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
        var limit = options.Value.MaxRequestBodyBytes;
        if (!IsJson(request.ContentType))
        {
            return (default, Problems.UnsupportedMediaType());
        }

        if (request.ContentLength > limit)
        {
            return (default, Problems.BodyTooLarge(limit));
        }

        var buffer = new ArrayBufferWriter<byte>(4096);
        try
        {
            while (true)
            {
                var memory = buffer.GetMemory(8192);
                var read = await request.Body.ReadAsync(memory, cancellationToken);
                if (read == 0)
                {
                    break;
                }

                buffer.Advance(read);
                if (buffer.WrittenCount > limit)
                {
                    return (default, Problems.BodyTooLarge(limit));
                }
            }
        }
        catch (BadHttpRequestException exception) when (exception.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return (default, Problems.BodyTooLarge(limit));
        }

        return Parse(buffer.WrittenMemory, typeInfo);
    }

    public static (T? Value, ProblemHttpResult? Problem) Parse<T>(ReadOnlyMemory<byte> body, JsonTypeInfo<T> typeInfo)
    {
        if (body.IsEmpty)
        {
            return (default, Problems.InvalidBody("The body is empty."));
        }

        try
        {
            var value = JsonSerializer.Deserialize(body.Span, typeInfo);
            return value is null ? (default, Problems.InvalidBody("The body must be a JSON object.")) : (value, null);
        }
        catch (JsonException exception)
        {
            var where = exception.Path is { Length: > 0 } path ? $" at {Bounded(path)}" : string.Empty;
            return (default, Problems.InvalidBody($"The body is not valid JSON of the expected shape{where}."));
        }
        catch (Exception exception) when (exception is InvalidOperationException or NotSupportedException or ArgumentException or FormatException or OverflowException)
        {
            return (default, Problems.InvalidBody("The body is not valid JSON of the expected shape."));
        }
    }

    private static bool IsJson(string? contentType) =>
        contentType is null
        || contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase)
        || contentType.StartsWith("application/cloudevents+json", StringComparison.OrdinalIgnoreCase)
        || contentType.StartsWith("text/json", StringComparison.OrdinalIgnoreCase);

    // A JSON path is built from the client's own property names: bound it and keep it printable.
    private static string Bounded(string path)
    {
        var cleaned = new string(path.Take(80).Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return path.Length > 80 ? cleaned + "…" : cleaned;
    }
}
