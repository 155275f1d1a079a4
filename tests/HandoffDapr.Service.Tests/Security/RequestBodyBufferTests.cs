using HandoffDapr.Service.Api;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Http;

namespace HandoffDapr.Service.Tests.Security;

/// <summary>
/// The webhook route is open (the signature is checked on the bytes read): what a caller claims must not decide how
/// much memory is set aside for it, or many slow callers claiming the maximum exhaust the heap.
/// </summary>
public sealed class RequestBodyBufferTests
{
    private const int Limit = 256 * 1024;

    [Fact]
    public async Task Buffer_is_not_sized_by_the_content_length_a_caller_claims()
    {
        var body = new TricklingBody(bytes: 1);
        var request = new DefaultHttpContext().Request;
        request.ContentLength = Limit;
        request.Body = body;

        var (read, _) = await RequestBody.ReadAsync(request, Limit, CancellationToken.None);
        read?.Dispose();

        Assert.InRange(body.FirstBuffer, 1, 16 * 1024);
    }

    [Fact]
    public async Task Body_as_long_as_the_limit_is_still_read_whole()
    {
        var request = new DefaultHttpContext().Request;
        request.ContentLength = Limit;
        request.Body = new TricklingBody(bytes: Limit);

        var (read, problem) = await RequestBody.ReadAsync(request, Limit, CancellationToken.None);

        Assert.Null(problem);
        using (read)
        {
            Assert.Equal(Limit, read!.Length);
        }
    }

    /// <summary>
    /// A chunked body declares no length: the limit is found while reading, and one byte past it is a 413 (on the webhook,
    /// whose 256 KiB cap is under Kestrel's own limit, nothing else would stop it).
    /// </summary>
    [Fact]
    public async Task Body_of_no_declared_length_one_byte_over_the_limit_is_too_large()
    {
        var request = new DefaultHttpContext().Request;
        request.Body = new TricklingBody(bytes: Limit + 1);

        var (read, problem) = await RequestBody.ReadAsync(request, Limit, CancellationToken.None);

        Assert.Null(read);
        Assert.Equal(StatusCodes.Status413PayloadTooLarge, problem!.StatusCode);
        Assert.Equal($"The body may be at most {Limit} bytes.", problem.ProblemDetails.Detail);
    }

    /// <summary>Sends its bytes at most 4 KiB at a time, as a network does, and records the first buffer it was given.</summary>
    private sealed class TricklingBody(int bytes) : AsyncReadOnlyStream
    {
        private int left = bytes;

        public int FirstBuffer { get; private set; } = -1;

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (FirstBuffer < 0)
            {
                FirstBuffer = buffer.Length;
            }

            var count = Math.Min(Math.Min(left, buffer.Length), 4096);
            buffer.Span[..count].Fill((byte)' ');
            left -= count;
            return ValueTask.FromResult(count);
        }
    }
}
