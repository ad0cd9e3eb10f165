"""Submit a recipe to a Ray cluster through the Job Submission API and follow its logs.

Start a local cluster first (`infra/local_cluster.sh start`) or point --address at yours.

    .venv/bin/python examples/submit_job.py http://127.0.0.1:8265
"""

import sys

from hypernym.jobs.submit import job_logs, submit_recipe, wait_for

address = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8265"
job_id = submit_recipe("pipelines/prepare/folder.yaml", address=address,
                       overrides=["output=.hypernym/examples/digits-job", "overwrite=true"])
print("submitted", job_id)
for line in job_logs(job_id, address=address, follow=True):
    print(line, end="")
print("final status:", wait_for(job_id, address=address))
