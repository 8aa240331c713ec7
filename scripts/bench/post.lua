-- wrk script: POST the quickstart request to /score.
wrk.method = "POST"
wrk.path = "/score"
wrk.body = '{"data": [[1,2,3,4,5,6,7,8,9,10],[10,9,8,7,6,5,4,3,2,1]]}'
wrk.headers["Content-Type"] = "application/json"
